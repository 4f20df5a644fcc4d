"""Commands of users' actions: issued on commit, re-sent while pending, settled once.

:class:`CommandDesk` is a commit listener: a commit whose ``actions`` changed (and are not
empty) issues one command per action (:func:`server.hops.commands.issue`) and records them.
The same commit's delta carries the actions to every device; a connection derives the same
commands from it (:meth:`CommandDesk.commands_after`) and sends them right after the delta, so
the normal path costs no read. A device that was away gets every pending command again after
its ``hello`` (:meth:`CommandDesk.pending`): delivery is at least once. A device answers with
``command_result``; :meth:`CommandDesk.settle` records the first answer and only that one (the
store's conditional write), so a repeated answer changes nothing: applied once. A command that
nobody answered before its expiry is marked ``expired`` when it is next read (the history
route, a ``hello``); an answer after its expiry is recorded as ``expired``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

from server import protocol as wire
from server.hops.commands import LONGEST_TTL_MS, issue, to_wire
from server.metrics import Metrics
from server.protocol import Delta
from server.store.base import EXPIRED, PENDING, CommandRecord, Store, UserState

log = logging.getLogger(__name__)

HISTORY: Final = 100
"""Commands the history route shows, newest first."""


class CommandDesk:
    """Issues, re-sends, settles and expires the commands of users' actions."""

    def __init__(self, store: Store, metrics: Metrics, clock: Callable[[], float]) -> None:
        self._store = store
        self._metrics = metrics
        self._clock = clock

    async def on_commit(self, previous: UserState, committed: UserState, cause: str) -> None:
        """A commit listener: record the commands of new actions. Raises
        :class:`~server.errors.StoreError` (the listener's caller logs it; the commands are
        recorded later by :meth:`settle`, from the state, if a device answers one)."""
        if committed.actions and tuple(committed.actions) != tuple(previous.actions):
            commands = issue(
                committed.user_id, committed.version, committed.actions, committed.updated_at
            )
            await self._store.put_commands(commands)

    @staticmethod
    def commands_after(delta: Delta) -> str | None:
        """The ``commands`` message that follows ``delta``, if it issued commands (a delta of
        one commit whose actions changed); ``None`` otherwise, and for a coalesced delta,
        whose actions were issued by an earlier version (see :meth:`pending`)."""
        actions = delta.changes.get("actions")
        if not actions or not isinstance(actions, list) or delta.base != delta.version - 1:
            return None
        commands = issue(delta.user_id, delta.version, [str(a) for a in actions], int(delta.t))
        return wire.encode_commands(delta.user_id, [to_wire(c) for c in commands])

    async def pending(self, user_id: str, last_commit_ms: int) -> str | None:
        """The ``commands`` message of the user's pending commands (``None``: none), expiring
        those past their expiry; ``last_commit_ms``: when the user's state last changed (a
        user with no commit within the longest command lifetime has none pending, and costs
        no read). Raises :class:`~server.errors.StoreError`."""
        if int(self._clock() * 1000) - last_commit_ms > LONGEST_TTL_MS:
            return None
        commands = [c for c in await self.history(user_id) if c.outcome == PENDING]
        if not commands:
            return None
        return wire.encode_commands(user_id, [to_wire(c) for c in reversed(commands)])

    async def history(self, user_id: str) -> list[CommandRecord]:
        """The user's newest commands, newest first, those past expiry marked ``expired``.
        Raises :class:`~server.errors.StoreError`."""
        now_ms = int(self._clock() * 1000)
        commands = await self._store.commands_of(user_id, HISTORY)
        for index, command in enumerate(commands):
            if command.outcome == PENDING and command.expires_at < now_ms:
                settled = await self._store.settle_command(
                    user_id, command.command_id, EXPIRED, device=None, at=now_ms
                )
                if settled is not None:
                    if settled.outcome == EXPIRED and settled.outcome_at == now_ms:
                        self._metrics.command_results.labels(EXPIRED).inc()
                    commands[index] = settled
        return commands

    async def settle(
        self, user_id: str, command_id: str, outcome: str, device: str | None, state: UserState
    ) -> CommandRecord | None:
        """Record a device's answer (once); the command as it is now, or ``None`` for an id
        the user has no command of. ``state``: the user's state now, whose commands are
        recorded first if the commit listener has not got there yet (a fast watch may answer
        before it). Raises :class:`~server.errors.StoreError`."""
        now_ms = int(self._clock() * 1000)
        settled = await self._store.settle_command(
            user_id, command_id, outcome, device=device, at=now_ms
        )
        if settled is None and state.actions:
            issued = issue(user_id, state.version, state.actions, state.updated_at)
            if any(c.command_id == command_id for c in issued):
                await self._store.put_commands(issued)
                settled = await self._store.settle_command(
                    user_id, command_id, outcome, device=device, at=now_ms
                )
        if settled is not None and settled.outcome_at == now_ms:
            self._metrics.command_results.labels(settled.outcome).inc()
        return settled
