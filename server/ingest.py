"""Write-behind ingest: frames from every connection, committed in shared batches.

Callers :meth:`Ingestor.submit` a user's frames and get back once they are durable. Submits
that arrive while a write is in flight wait for the next write and share it (group commit),
so the store sees a few large transactions instead of one per message, with no timer: the
batch is whatever accumulated during the previous write. Pending rows are bounded; past the
bound, submitters wait (their sockets stop being read), which is the backpressure.

After each durable write, ``on_committed`` hears which users got frames (the pipeline
schedules their analysis, the hub publishes summaries to debug peers).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from brain.model import Frame
from server.errors import FramesNotDurable, StoreError
from server.metrics import Metrics
from server.store.base import FrameRow, Store

log = logging.getLogger(__name__)

OnCommitted = Callable[[Mapping[str, Sequence[Frame]]], Awaitable[None]]


@dataclass(slots=True)
class _Pending:
    user_id: str
    frames: tuple[Frame, ...]
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Ingestor:
    """Batches frame writes for one store; ``writers`` batches may be in flight at once."""

    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        *,
        max_batch: int = 5000,
        max_pending: int = 50_000,
        writers: int = 1,
        on_committed: OnCommitted | None = None,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._writers = writers
        self._on_committed = on_committed
        self._queue: list[_Pending] = []
        self._queued_rows = 0
        self._wakeup = asyncio.Event()
        self._room = asyncio.Condition()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(), name=f"ingest-writer-{i}")
            for i in range(self._writers)
        ]

    async def submit(self, user_id: str, frames: Sequence[Frame]) -> None:
        """Return once ``frames`` are durable.

        Raises :class:`FramesNotDurable` or :class:`StoreError` if the store failed them
        (the caller must not ack them), or :class:`RuntimeError` after :meth:`close`.
        """
        if not frames:
            return
        if self._closing:
            raise RuntimeError("ingest is shut down")
        if self._queued_rows >= self._max_pending:
            async with self._room:
                await self._room.wait_for(lambda: self._queued_rows < self._max_pending)
        pending = _Pending(user_id, tuple(frames))  # a copy of a list: the caller may reuse it
        started = time.perf_counter()
        self._queue.append(pending)
        self._queued_rows += len(frames)
        self._wakeup.set()
        await pending.done
        self._metrics.ack_latency.observe(time.perf_counter() - started)

    async def close(self) -> None:
        """Write everything already submitted, then stop the writers."""
        self._closing = True
        self._wakeup.set()
        if self._tasks:
            await asyncio.gather(*self._tasks)
        self._tasks = []

    def _take(self) -> list[_Pending]:
        batch: list[_Pending] = []
        rows = 0
        while self._queue and (not batch or rows + len(self._queue[0].frames) <= self._max_batch):
            pending = self._queue.pop(0)
            batch.append(pending)
            rows += len(pending.frames)
        self._queued_rows -= rows
        if not self._queue:
            self._wakeup.clear()
        return batch

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            batch = self._take()
            if not batch:
                if self._closing:
                    self._wakeup.set()  # let the other writers see it too
                    return
                continue
            async with self._room:
                self._room.notify_all()
            await self._write(batch)

    async def _write(self, batch: list[_Pending]) -> None:
        rows: list[FrameRow] = [(p.user_id, frame) for p in batch for frame in p.frames]
        started = time.perf_counter()
        failed: frozenset[int] = frozenset()
        error: StoreError | None = None
        try:
            await self._store.put_frames(rows)
        except FramesNotDurable as exc:
            failed, error = exc.failed, exc
        except StoreError as exc:
            failed, error = frozenset(range(len(rows))), exc
        except Exception as exc:
            log.exception("frame write failed")
            failed, error = frozenset(range(len(rows))), StoreError(f"store failed: {exc!r}")
        self._metrics.ingest_seconds.observe(time.perf_counter() - started)
        self._metrics.ingest_batch.observe(len(rows))
        committed: dict[str, list[Frame]] = {}
        offset = 0
        for pending in batch:
            span = range(offset, offset + len(pending.frames))
            offset += len(pending.frames)
            cancelled = pending.done.cancelled()  # the submitter went away; rows still count
            if error is not None and any(i in failed for i in span):
                # A submit is acked as a whole: if any of its rows failed, none is acked
                # (the device resends; rows that did land are idempotent).
                self._metrics.frames_not_durable.inc(sum(1 for i in span if i in failed))
                if not cancelled:
                    pending.done.set_exception(error)
                continue
            if not cancelled:
                pending.done.set_result(None)
            committed.setdefault(pending.user_id, []).extend(pending.frames)
        if error is not None:
            log.warning("%d of %d frames not durable: %s", len(failed), len(rows), error)
        if committed and self._on_committed is not None:
            try:
                await self._on_committed(committed)
            except Exception:
                log.exception("on_committed hook failed")
