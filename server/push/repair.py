"""Repairs: what the broker lost, made good by version.

The state is small and versioned, so the current version stands for everything before it:
nothing is queued or replayed. Two kinds of users are marked:

- *unpublished*: a delta was committed but the broker did not take it. Once the broker is
  connected again, the user's current state is published to every node (``republish``).
- *unsynced*: this node's broker reconnected, so the user's local devices may have missed
  deltas published meanwhile. The current state is offered to the local devices only
  (``resync``); every node does the same for its own.

Either way it goes out as a delta from ``version - 1`` carrying every visible field: a
device at that version ignores it, one behind applies it, one further behind sees a gap
and asks for a snapshot. A repair that cannot be done yet (store or broker still down) is
retried with :class:`brain.backoff.Backoff`, woken early by the next mark or reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable, Iterable

from brain.backoff import Backoff
from server.broker.base import Broker
from server.errors import CompanionError
from server.metrics import Metrics
from server.protocol import Delta

log = logging.getLogger(__name__)

ReadCurrent = Callable[[str], Awaitable[Delta | None]]
"""The user's current state as a delta from the version before it, with every visible field
(``None`` when nothing was committed yet)."""

REPAIR = Backoff(attempts=None, base=0.2, cap=10.0)
"""How a repair the store or the broker could not do yet is retried."""

READ_TIMEOUT_S = 5.0
"""Deadline of one current-state read during a repair."""

_BATCH = 32
"""Users repaired at once (bounded: a reconnect may concern thousands)."""


class Repairs:
    """Marked users, and the one task that repairs them until none is left."""

    def __init__(
        self,
        broker: Broker,
        metrics: Metrics,
        offer_local: Callable[[Delta], None],
        interested: Callable[[str], bool],
        policy: Backoff = REPAIR,
    ) -> None:
        self._broker = broker
        self._metrics = metrics
        self._offer_local = offer_local
        self._interested = interested
        self._policy = policy
        self.read_current: ReadCurrent | None = None
        # User -> mark. Marks grow with each marking, so that a repair in flight does not
        # clear a newer one (a later failure, another reconnect).
        self._unpublished: dict[str, int] = {}
        self._unsynced: dict[str, int] = {}
        self._marks = itertools.count()
        self._republished = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def unpublished(self, user_id: str) -> bool:
        """Mark a user whose delta the broker did not take; whether it is the first one
        pending (the caller logs once per run of failures)."""
        first = not self._unpublished
        self._unpublished[user_id] = next(self._marks)
        self._start()
        return first

    def published(self, user_id: str) -> None:
        """A newer delta of the user went out: devices that missed the lost one see a gap
        and catch up, so no re-publish is needed."""
        self._unpublished.pop(user_id, None)

    def reconnected(self, users: Iterable[str]) -> None:
        """The broker is back: these users' local devices may have missed deltas."""
        mark = next(self._marks)
        self._unsynced.update(dict.fromkeys(users, mark))
        self._start()

    async def close(self) -> None:
        """Stop repairing (what is left is lost with the process; devices recover by
        version when they reconnect elsewhere)."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _start(self) -> None:
        self._wake.set()
        if not self._closed and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._run(), name="hub-repairs")

    async def _run(self) -> None:
        """Repair until nothing is left, backing off while the store or broker cannot."""
        retry = 0
        before = self._republished
        while self._unpublished or self._unsynced:
            self._wake.clear()
            if await self._round():
                retry = 0
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._policy.delay(retry)):
                    await self._wake.wait()
            retry += 1
        if (count := self._republished - before) > 0:
            log.info("re-published the current state of %d users", count)

    async def _round(self) -> bool:
        """One pass over the marked users; whether all of them were repaired."""
        read = self.read_current
        if read is None:
            log.warning(
                "no current-state reader: %d users not repaired",
                len(self._unpublished.keys() | self._unsynced.keys()),
            )
            self._unpublished.clear()
            self._unsynced.clear()
            return True
        done = True
        for marks, repair in ((self._unpublished, self._republish), (self._unsynced, self._resync)):
            if marks is self._unpublished and not self._broker.health().connected:
                done = False  # it would fail: spare the store the reads until it is back
                continue
            pending = list(marks.items())
            for start in range(0, len(pending), _BATCH):
                batch = pending[start : start + _BATCH]
                results = await asyncio.gather(*(repair(read, user) for user, _ in batch))
                for (user, mark), repaired in zip(batch, results, strict=True):
                    if repaired and marks.get(user) == mark:
                        del marks[user]
                done = done and all(results)
        return done

    async def _republish(self, read: ReadCurrent, user_id: str) -> bool:
        """Publish the user's current state to every node; whether that was done."""
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                current = await read(user_id)
            if current is not None:
                await self._broker.publish(user_id, current.encode().encode())
        except Exception as exc:
            _failed("re-publishing", user_id, exc)
            return False
        self._metrics.repairs.labels("republish").inc()
        self._republished += 1
        return True

    async def _resync(self, read: ReadCurrent, user_id: str) -> bool:
        """Offer the user's current state to this node's devices; whether that was done."""
        if not self._interested(user_id):
            return True
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                current = await read(user_id)
        except Exception as exc:
            _failed("resync read of", user_id, exc)
            return False
        if current is not None:
            self._offer_local(current)
            self._metrics.repairs.labels("resync").inc()
        return True


def _failed(what: str, user_id: str, exc: Exception) -> None:
    """Log a failed repair step: expected during an outage (DEBUG), a bug otherwise."""
    if isinstance(exc, (CompanionError, TimeoutError)):
        log.debug("%s %s failed: %s", what, user_id, type(exc).__name__)
    else:
        log.warning("%s %s failed: %r; retrying with backoff", what, user_id, exc)
