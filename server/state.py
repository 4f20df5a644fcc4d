"""The one commit path for a user's state.

:meth:`StateService.commit` writes version + 1 with a fresh state hash, conditional on the
version the caller decided from, and publishes the delta (only the visible fields that
changed) stamped with the commit time. The brain's reactor, the avatar saga and the demo
routes all go through it; :meth:`StateService.update` wraps it in the read-decide-commit
loop that re-reads after a lost race. Listeners hear every commit (the avatar saga starts
from there).

Once the store has the new version, the commit has happened: nothing after it turns it into
an error for the caller. A delta the broker does not take is the hub's to repair (it
re-publishes the current state, read through :meth:`StateService.current_delta`, when the
broker is back), and a listener that raises is logged and counted.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any

from brain.hashing import VISIBLE_FIELDS
from brain.model import Profile
from brain.tiers import DEFAULT_TIERS, Tiers
from server.errors import CompanionError, VersionConflict
from server.metrics import Metrics
from server.protocol import Delta
from server.push.hub import Hub
from server.store.base import Store, UserState
from server.tiers import TierBook

log = logging.getLogger(__name__)

Clock = Callable[[], float]
"""Seconds since the epoch (``time.time`` in production)."""

CommitListener = Callable[[UserState, UserState, str], Awaitable[None]]
"""Called with (previous, committed, cause) after each commit."""

Decide = Callable[[UserState], Mapping[str, Any] | None]
"""Given the current state, the changes to commit, or ``None`` for none."""

_WRITABLE = frozenset(VISIBLE_FIELDS)


class StateService:
    """Reads and commits user state; publishes a delta per commit."""

    def __init__(
        self,
        store: Store,
        hub: Hub,
        metrics: Metrics,
        clock: Clock,
        *,
        tiers: Tiers = DEFAULT_TIERS,
    ) -> None:
        self._store = store
        self._hub = hub
        self._metrics = metrics
        self._clock = clock
        self.tier_book = TierBook(tiers)
        """The tier of each user whose state this node read or wrote lately."""
        self.listeners: list[CommitListener] = []
        hub.read_current_with(self.current_delta)

    async def current(self, user_id: str) -> UserState:
        """The user's state: defaults at version 0 if nothing was committed yet, at the erased
        version after an erase; it carries the user's erase epoch, which every commit is
        conditional on."""
        state = await self._store.get_state(user_id)
        if state is not None:
            self.tier_book.learn(user_id, state.profile)
            return state
        initial = UserState.initial(user_id)
        tombstone = await self._store.tombstone(user_id)
        if tombstone.epoch:  # erased: versions go on from the erased one
            return replace(initial, version=tombstone.version, epoch=tombstone.epoch)
        return initial

    async def current_delta(self, user_id: str) -> Delta | None:
        """The current state as a delta from the version before it, carrying every visible
        field (``None`` at version 0): what the hub sends to repair lost deltas."""
        state = await self.current(user_id)
        if state.version == 0:
            return None
        return Delta(
            user_id,
            state.version,
            state.version - 1,
            state.state_hash,
            state.visible(),
            float(state.updated_at),
        )

    async def commit(
        self,
        user_id: str,
        changes: Mapping[str, Any],
        expected_version: int,
        *,
        cause: str = "manual",
    ) -> UserState:
        """Write ``changes`` as version ``expected_version + 1`` and publish the delta.

        Raises :class:`VersionConflict` if the stored version is not ``expected_version``,
        and :class:`ValueError` for a field that is not a visible state field.
        """
        unknown = set(changes) - _WRITABLE
        if unknown:
            raise ValueError(f"not state fields: {', '.join(sorted(unknown))}")
        previous = await self.current(user_id)
        if previous.version != expected_version:
            self._metrics.commit_conflicts.inc()
            raise VersionConflict(user_id, expected_version, previous.version)
        return await self._write(previous, changes, cause)

    async def _write(
        self, previous: UserState, changes: Mapping[str, Any], cause: str
    ) -> UserState:
        """Commit ``changes`` on top of ``previous`` (conditional on its version)."""
        user_id = previous.user_id
        now = self._clock()
        values = dict(changes)
        if "actions" in values:
            values["actions"] = tuple(values["actions"])
        committed = replace(
            previous, **values, version=previous.version + 1, updated_at=int(now * 1000)
        ).rehashed()
        try:
            await self._store.put_state(committed, previous.version)
        except VersionConflict:
            self._metrics.commit_conflicts.inc()
            raise
        self._metrics.commits.labels(cause).inc()
        before, after = previous.visible(), committed.visible()
        diff = {name: after[name] for name in VISIBLE_FIELDS if after[name] != before[name]}
        await self._hub.publish_delta(
            Delta(
                user_id, committed.version, previous.version, committed.state_hash, diff, now * 1000
            )
        )
        await self._tell_listeners(previous, committed, cause)
        return committed

    async def _tell_listeners(self, previous: UserState, committed: UserState, cause: str) -> None:
        """Each listener hears the commit; one that raises fails neither the commit nor them."""
        for listener in self.listeners:
            try:
                await listener(previous, committed, cause)
            except CompanionError as exc:
                self._metrics.listener_failures.inc()
                log.warning("commit listener failed for %s: %s", committed.user_id, exc)
            except Exception:
                self._metrics.listener_failures.inc()
                log.exception("commit listener failed for %s", committed.user_id)

    async def update(
        self,
        user_id: str,
        decide: Decide,
        *,
        cause: str,
        attempts: int = 5,
        epoch: int | None = None,
    ) -> UserState | None:
        """Read, decide, commit; on a lost race read and decide again.

        ``epoch`` is the user's erase epoch when the caller's work began (``None``: any):
        once the user was erased since, nothing is committed, however often it re-reads
        (the write itself is conditional on the epoch it read, so an erase between the read
        and the write is a lost race too). Returns the committed state, or ``None`` when
        ``decide`` wanted no change or the user was erased. Raises :class:`VersionConflict`
        if every one of ``attempts`` lost its race.
        """
        for attempt in range(attempts):
            current = await self.current(user_id)
            if epoch is not None and current.epoch != epoch:
                return None  # erased since the work began: it must not write the user again
            changes = decide(current)
            if not changes:
                return None
            unknown = set(changes) - _WRITABLE
            if unknown:
                raise ValueError(f"not state fields: {', '.join(sorted(unknown))}")
            try:
                return await self._write(current, changes, cause)
            except VersionConflict:
                log.info("version race on %s (attempt %d), re-reading", user_id, attempt + 1)
        raise VersionConflict(user_id, -1)

    async def set_profile(self, user_id: str, profile: Profile, *, attempts: int = 5) -> UserState:
        """Store a new coach persona / base avatar; the version does not move (nothing
        visible changed). Raises :class:`VersionConflict` after ``attempts`` lost races."""
        return await self.change_profile(user_id, lambda _: profile, attempts=attempts)

    async def change_profile(
        self, user_id: str, change: Callable[[Profile], Profile], *, attempts: int = 5
    ) -> UserState:
        """Store ``change`` of the user's current profile (read again on each lost race, so
        a persona and a tier set at once both stay); the version does not move. Raises
        :class:`VersionConflict` after ``attempts`` lost races."""
        for _ in range(attempts):
            current = await self.current(user_id)
            updated = replace(current, profile=change(current.profile))
            if current.version == 0:
                # A first write must create the row; it becomes version 1 so that the
                # "no row" condition (expected 0) stays unambiguous.
                updated = replace(updated, version=1, updated_at=int(self._clock() * 1000))
            updated = updated.rehashed()
            try:
                await self._store.put_state(updated, current.version)
            except VersionConflict:
                self._metrics.commit_conflicts.inc()
                continue
            if updated.version != current.version:
                # Devices track versions: tell them about version 1 even though nothing
                # they display changed.
                delta = Delta(user_id, 1, 0, updated.state_hash, {}, updated.updated_at)
                await self._hub.publish_delta(delta)
            self.tier_book.learn(user_id, updated.profile)
            return updated
        raise VersionConflict(user_id, -1)
