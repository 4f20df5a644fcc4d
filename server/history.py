"""The decision history: every committed version kept as an event, and the read model.

This is the project's CQRS split for "why was the pet stressed yesterday at 15:00?". The
command side is the one commit path (:class:`~server.state.StateService`), which keeps only
a user's current state. :class:`HistoryRecorder` listens to it and projects each commit
into a :class:`~server.store.base.HistoryEvent` (time, version, who decided, reasoning,
state, mood, energy, image, and — when the decider attached it with
:func:`server.provenance.attach` — the model, its cost and a summary of the features).
:class:`HistoryReader` answers queries from those events only, never from the state.

**After the commit, once.** The recorder runs after the delta is published, so recording
never delays a device; it writes with :meth:`~server.store.base.Store.put_history`, which
records each (user, version) once, so a retry or a second node never writes an event
twice, and never for a user erased meanwhile. A store failure is retried under
:data:`RETRY`; an event still not recorded then is counted
(``companion_history_events{outcome="failed"}``) and logged as a warning: the commit
itself stands, the history has a gap.

**Retention.** Events are kept ``COMPANION_HISTORY_RETENTION_DAYS`` after their commit:
DynamoDB's TTL deletes them, and on SQLite :func:`history_stage` purges them at start and
every :data:`PURGE_INTERVAL_S`. Reads leave expired events out either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from typing import Final

from brain.backoff import Backoff
from brain.model import VISIBLE_FIELDS
from server import provenance
from server.errors import StoreError
from server.metrics import Metrics
from server.services import PartKey, Services
from server.store.base import HistoryEvent, HistoryQuery, Store, UserState
from server.store.sqlite import SQLiteStore

log = logging.getLogger(__name__)


SAGA_CAUSES: Final = frozenset({"avatar"})
"""Commit causes of the avatar saga (image and clip): for them the avatar decided, whatever
``source`` the state keeps from the assessment before."""

RETRY: Final = Backoff(attempts=3, base=0.1, cap=1.0)
"""Attempts at one event's write (each DynamoDB call also retries on its own)."""

OUTCOMES: Final = ("recorded", "skipped", "failed")
"""The ``outcome`` label values of ``companion_history_events``."""

PURGE_INTERVAL_S: Final = 3600.0
MAX_PAGE: Final = 100
"""The most events one read returns."""


def event_of(previous: UserState, committed: UserState, cause: str) -> HistoryEvent:
    """The history event of a commit (without provenance): who decided is ``avatar`` for
    the saga's commits, else the state's ``source``."""
    before, after = previous.visible(), committed.visible()
    return HistoryEvent(
        user_id=committed.user_id,
        version=committed.version,
        at=committed.updated_at,
        cause=cause,
        source="avatar" if cause in SAGA_CAUSES else committed.source,
        state=committed.state,
        mood=committed.mood,
        energy=committed.energy,
        reasoning=committed.reasoning,
        actions=committed.actions,
        image_url=committed.image_url,
        video_url=committed.video_url,
        changed=tuple(name for name in VISIBLE_FIELDS if before[name] != after[name]),
    )


class HistoryRecorder:
    """The commit listener that records each committed version; see the module docstring."""

    def __init__(self, store: Store, metrics: Metrics, *, retry: Backoff = RETRY) -> None:
        self._store = store
        self._metrics = metrics
        self._retry = retry

    async def on_commit(self, previous: UserState, committed: UserState, cause: str) -> None:
        """The :class:`~server.state.StateService` listener: record ``committed``. Never
        raises but :class:`asyncio.CancelledError`."""
        event = event_of(previous, committed, cause)
        attached = provenance.take(cause)
        if attached is not None:
            event = replace(event, provenance=attached.bounded())
        await self.record(event)

    async def record(self, event: HistoryEvent) -> bool:
        """Write ``event`` (retrying store failures); whether this call recorded it."""
        retry_number = 0
        while True:
            try:
                written = await self._store.put_history(event)
            except StoreError as error:
                if not self._retry.may_retry(retry_number):
                    self._metrics.history_events.labels("failed").inc()
                    log.warning(
                        "history: version %d not recorded after %d attempts: %s",
                        event.version,
                        retry_number + 1,
                        type(error).__name__,
                    )
                    return False
                await self._retry.wait(retry_number)
                retry_number += 1
                continue
            self._metrics.history_events.labels("recorded" if written else "skipped").inc()
            return written


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """One page of a user's history, newest first; ``next_before`` is the version to pass
    as ``before`` for the next (older) page, ``None`` when there is none."""

    user_id: str
    events: tuple[HistoryEvent, ...]
    next_before: int | None


class HistoryReader:
    """The read model: pages of a user's history, and all of it for the GDPR export."""

    def __init__(self, store: Store, clock: Callable[[], float]) -> None:
        self._store = store
        self._clock = clock

    async def page(self, user_id: str, query: HistoryQuery) -> HistoryPage:
        """The events ``query`` selects, and whether older ones remain (``next_before``).

        Raises :class:`ValueError` for a limit outside 1..:data:`MAX_PAGE`, and
        :class:`~server.errors.StoreError`.
        """
        if not 1 <= query.limit <= MAX_PAGE:
            raise ValueError(f"limit must be 1..{MAX_PAGE}, got {query.limit}")
        now_ms = int(self._clock() * 1000)
        one_more = replace(query, limit=query.limit + 1)
        found = await self._store.history(user_id, one_more, now_ms=now_ms)
        events = tuple(found[: query.limit])
        more = len(found) > query.limit
        return HistoryPage(user_id, events, events[-1].version if more else None)

    async def everything(self, user_id: str) -> list[HistoryEvent]:
        """Every unexpired event of the user, oldest first (the export). Raises
        :class:`~server.errors.StoreError`."""
        events: list[HistoryEvent] = []
        before: int | None = None
        while True:
            page = await self.page(user_id, HistoryQuery(limit=MAX_PAGE, before_version=before))
            events.extend(page.events)
            if page.next_before is None:
                return events[::-1]
            before = page.next_before


async def purge_once(services: Services) -> int:
    """Delete expired history events now; return how many (0 for stores with a TTL)."""
    store = services.store
    if not isinstance(store, SQLiteStore):
        return 0
    deleted = await store.purge_expired_history(services.now_ms())
    if deleted:
        log.info("history: deleted %d expired events", deleted)
    return deleted


async def history_stage(services: Services, stack: AsyncExitStack) -> None:
    """Record every commit from now on, and purge expired events periodically (SQLite)."""
    recorder = HistoryRecorder(services.store, services.metrics)
    for outcome in OUTCOMES:  # every label exists from the start, at zero
        services.metrics.history_events.labels(outcome)
    services.state.listeners.append(recorder.on_commit)
    services.parts.add(HISTORY, recorder)
    if not isinstance(services.store, SQLiteStore):
        return

    async def purge() -> None:
        while True:
            try:
                await purge_once(services)
            except StoreError as error:
                log.warning("history: purge failed (%s); trying again next interval", error)
            await asyncio.sleep(PURGE_INTERVAL_S)

    task = asyncio.create_task(purge(), name="history-purge")

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    stack.push_async_callback(stop)


HISTORY: Final[PartKey[HistoryRecorder]] = PartKey("history")
"""Key of the node's :class:`HistoryRecorder` in ``Services.parts``."""
