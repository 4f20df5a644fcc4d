"""The one commit path for a user's state.

:meth:`StateService.commit` writes version + 1 with a fresh state hash, conditional on the
version the caller decided from, and publishes the delta (only the visible fields that
changed) stamped with the commit time. The brain's reactor, the avatar saga and the demo
routes all go through it; :meth:`StateService.update` wraps it in the read-decide-commit
loop that re-reads after a lost race. Listeners hear every commit (the avatar saga starts
from there).

**Current state from memory.** The service keeps the current state of active users
(:class:`~server.store.current.CurrentStates`, a bounded LRU): a commit decides on the kept
state and writes conditionally on its version, erase epoch and profile, with no read round
trip; a lost race drops the kept state, re-reads the store and decides again. When this
process is the only writer of its users (``exclusive``: one node, the memory broker), reads
are answered from memory too, and a decision to change nothing is final. In a cluster
(another node may have committed since), reads go to the store, and a decision to change
nothing made on a kept state is checked against the store before it counts; deltas heard
from other nodes drop the kept state of their user, and the broker coming back drops all.

**One write per change.** Before a commit is written, :attr:`StateService.amenders` may add
fields to it (the avatar saga adds the image when the new state's avatar is a cache hit), so
that the state and its image are one write and one delta.

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
from server.store.current import DEFAULT_MAX_USERS, CurrentStates
from server.tiers import TierBook

log = logging.getLogger(__name__)

Clock = Callable[[], float]
"""Seconds since the epoch (``time.time`` in production)."""

CommitListener = Callable[[UserState, UserState, str], Awaitable[None]]
"""Called with (previous, committed, cause) after each commit."""

Decide = Callable[[UserState], Mapping[str, Any] | None]
"""Given the current state, the changes to commit, or ``None`` for none."""

Amend = Callable[[UserState, UserState, str], Mapping[str, Any] | None]
"""Called with (previous, about to be committed, cause) before a commit is written: more
visible fields to write in the same commit, or ``None``. Synchronous: it must not wait."""

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
        cache_users: int = DEFAULT_MAX_USERS,
        exclusive: bool = False,
    ) -> None:
        self._store = store
        self._hub = hub
        self._metrics = metrics
        self._clock = clock
        self._exclusive = exclusive
        self.tier_book = TierBook(tiers)
        """The tier of each user whose state this node read or wrote lately."""
        self.kept = CurrentStates(cache_users)
        """The current state of active users (see the module docstring)."""
        self.listeners: list[CommitListener] = []
        self.amenders: list[Amend] = []
        hub.read_current_with(self.current_delta)
        hub.hear_deltas(self._heard, self.kept.clear)

    def _heard(self, delta: Delta) -> None:
        self.kept.heard(delta.user_id, delta.version)

    def forget(self, user_id: str) -> None:
        """Drop the kept state of ``user_id`` (an erase hook)."""
        self.kept.drop(user_id)

    async def current(self, user_id: str) -> UserState:
        """The user's state: defaults at version 0 if nothing was committed yet, at the erased
        version after an erase; it carries the user's erase epoch, which every commit is
        conditional on. From memory when this process is the only writer and keeps it."""
        if self._exclusive:
            kept = self.kept.get(user_id)
            if kept is not None:
                self._metrics.state_reads.labels("cache").inc()
                return kept
        return await self._read(user_id)

    async def _read(self, user_id: str) -> UserState:
        """The user's state from the store, kept for the next commit."""
        self._metrics.state_reads.labels("store").inc()
        ticket = self.kept.ticket()
        state = await self._store.get_state(user_id)
        if state is not None:
            self.tier_book.learn(user_id, state.profile)
        else:
            state = UserState.initial(user_id)
            tombstone = await self._store.tombstone(user_id)
            if tombstone.epoch:  # erased: versions go on from the erased one
                state = replace(
                    state,
                    version=tombstone.version,
                    epoch=tombstone.epoch,
                    updated_at=tombstone.erased_at,  # the blank state dates from the erase
                )
        self.kept.keep(state, ticket)
        return state

    async def _decided(
        self, user_id: str, decide: Decide, epoch: int | None
    ) -> tuple[UserState, Mapping[str, Any] | None]:
        """The state to commit on and ``decide``'s changes on it: on the kept state when
        there is one (a decision to change nothing counts only when this process is the
        only writer: in a cluster the kept state may be behind), else on the store's."""
        kept = self.kept.get(user_id)
        if kept is not None and (epoch is None or kept.epoch == epoch):
            changes = decide(kept)
            if changes or self._exclusive:
                self._metrics.state_reads.labels("cache").inc()
                return kept, changes or None
        current = await self._read(user_id)
        if epoch is not None and current.epoch != epoch:
            return current, None  # erased since the work began: it must not write the user
        return current, decide(current)

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
        previous = self.kept.get(user_id)
        if previous is None or previous.version != expected_version:
            previous = await self._read(user_id)  # the kept state may be behind the caller's
        else:
            self._metrics.state_reads.labels("cache").inc()
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
        )
        for amend in self.amenders:
            committed = self._amended(amend, previous, committed, cause)
        committed = committed.rehashed()
        ticket = self.kept.ticket()
        try:
            await self._store.put_state(
                committed, previous.version, expected_profile=previous.profile
            )
        except VersionConflict:
            self._metrics.commit_conflicts.inc()
            self.kept.drop(user_id)
            raise
        self.kept.keep(committed, ticket)
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

    def _amended(
        self, amend: Amend, previous: UserState, committed: UserState, cause: str
    ) -> UserState:
        """``committed`` with what ``amend`` adds; an amender that fails adds nothing (the
        commit goes on without it: its listener does the work the slower way)."""
        try:
            extra = amend(previous, committed, cause)
            unknown = set(extra or ()) - _WRITABLE
            if unknown:
                raise ValueError(f"not state fields: {', '.join(sorted(unknown))}")
            return replace(committed, **extra) if extra else committed
        except Exception:
            log.exception("commit amender failed for %s", committed.user_id)
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
            current, changes = await self._decided(user_id, decide, epoch)
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
        for attempt in range(attempts):
            kept = self.kept.get(user_id) if not attempt else None
            current = kept if kept is not None else await self._read(user_id)
            updated = replace(current, profile=change(current.profile))
            if current.version == 0:
                # A first write must create the row; it becomes version 1 so that the
                # "no row" condition (expected 0) stays unambiguous.
                updated = replace(updated, version=1, updated_at=int(self._clock() * 1000))
            updated = updated.rehashed()
            ticket = self.kept.ticket()
            try:
                await self._store.put_state(
                    updated, current.version, expected_profile=current.profile
                )
            except VersionConflict:
                self._metrics.commit_conflicts.inc()
                self.kept.drop(user_id)
                continue
            self.kept.keep(updated, ticket)
            if updated.version != current.version:
                # Devices track versions: tell them about version 1 even though nothing
                # they display changed.
                delta = Delta(user_id, 1, 0, updated.state_hash, {}, updated.updated_at)
                await self._hub.publish_delta(delta)
            self.tier_book.learn(user_id, updated.profile)
            return updated
        raise VersionConflict(user_id, -1)
