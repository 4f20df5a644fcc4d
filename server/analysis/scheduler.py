"""The analysis scheduler: per user at most one analysis at a time, debounced and coalesced.

:meth:`Scheduler.schedule` asks for an analysis of a user. A user is in at most one of
these places, so there is never more than one analysis of a user under way:

- **debouncing**: the first schedule starts a timer of ``debounce_s``; schedules during it
  are merged into it. The timer is *not* restarted by later schedules, so a phone that sends
  a batch every 100 ms cannot starve its user's analysis: the wait is at most ``debounce_s``.
- **queued**: the timer ran out and the user's id is in the queue for a worker.
- **running**: a worker analyses the user. A schedule now sets a *rerun* flag (never a
  second queue entry): when the analysis ends, the user is scheduled once more, however
  many schedules arrived meanwhile.

``workers`` tasks take ids from the queue, so at most ``workers`` analyses run at once (that
bounds LLM calls). Debouncing plus queued users are bounded by ``max_pending``; past it a
schedule is refused and counted (the user's frames are durable, the next batch schedules
it again). A ``force`` flag rides along with the user until its analysis starts.

The sleep is injected (tests pass one that returns at once or on an event); :meth:`idle`
lets a caller wait until nothing is pending or running, without sleeping.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from server.metrics import Metrics

log = logging.getLogger(__name__)

Analyse = Callable[[str, bool], Awaitable[object]]
"""Analyse one user (``user_id``, ``force``); what it returns is ignored, what it raises logged."""

Sleep = Callable[[float], Awaitable[object]]

DEFAULT_MAX_PENDING = 100_000
"""Users that may wait for an analysis at once (about 100 bytes each)."""


class Scheduler:
    """See the module docstring. Call :meth:`start` in a running loop, :meth:`stop` at the end.

    Raises :class:`ValueError` for fewer than one worker, a negative debounce or a
    non-positive ``max_pending``.
    """

    def __init__(
        self,
        analyse: Analyse,
        *,
        workers: int,
        debounce_s: float,
        metrics: Metrics | None = None,
        max_pending: int = DEFAULT_MAX_PENDING,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.perf_counter,
        debounce_of: Callable[[str], float] | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        if debounce_s < 0:
            raise ValueError(f"debounce_s must not be negative, got {debounce_s}")
        if max_pending < 1:
            raise ValueError(f"max_pending must be positive, got {max_pending}")
        self._analyse = analyse
        self.workers = workers
        self.debounce_s = debounce_s
        self.debounce_of = debounce_of
        """A user's own debounce in seconds (their tier's analysis frequency), if any."""
        self.max_pending = max_pending
        self._metrics = metrics
        self._sleep = sleep
        self._clock = clock
        self._debouncing: dict[str, asyncio.Task[None]] = {}
        self._queued: set[str] = set()
        self._running: set[str] = set()
        self._rerun: set[str] = set()
        self._force: set[str] = set()
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []
        self._idle = asyncio.Event()
        self._idle.set()
        self._accepting = False
        self.completed = 0
        """Analyses finished (successfully or not) since start."""

    # -- what callers use -------------------------------------------------------------

    def start(self) -> None:
        """Start the workers. Raises :class:`RuntimeError` if started already."""
        if self._workers:
            raise RuntimeError("scheduler already started")
        self._accepting = True
        self._workers = [
            asyncio.create_task(self._work(), name=f"analysis-worker-{i}")
            for i in range(self.workers)
        ]

    def schedule(self, user_id: str, *, force: bool = False) -> bool:
        """Ask for an analysis of ``user_id``; return ``False`` if it was refused."""
        if not self._accepting:
            self._drop("stopped")
            return False
        if user_id in self._running:
            self._rerun.add(user_id)
            self._coalesced()
        elif user_id in self._debouncing or user_id in self._queued:
            self._coalesced()
        elif self.pending >= self.max_pending:
            self._drop("full")
            return False
        else:
            self._idle.clear()
            self._debouncing[user_id] = asyncio.create_task(
                self._debounce(user_id), name=f"debounce-{user_id}"
            )
            self._gauge()
        if force:
            self._force.add(user_id)
        return True

    @property
    def pending(self) -> int:
        """Users debouncing or queued (the queue depth metric)."""
        return len(self._debouncing) + len(self._queued)

    @property
    def running(self) -> int:
        return len(self._running)

    def is_idle(self) -> bool:
        """Whether nothing is debouncing, queued or running."""
        return not (self._debouncing or self._queued or self._running)

    async def idle(self) -> None:
        """Return once nothing is debouncing, queued or running (wrap it in a timeout)."""
        while not self.is_idle():
            self._idle.clear()  # set again by whichever step leaves nothing behind
            await self._idle.wait()

    async def stop(self, *, grace_s: float = 5.0) -> None:
        """Refuse new work, run what is pending within ``grace_s``, then cancel the rest.

        Debouncing users skip the rest of their wait. Whatever has not finished by the
        deadline is cancelled and logged: its frames are durable, and the next analysis
        of the user (after a restart, from a refilled window) covers them.
        """
        self._accepting = False
        for user_id, timer in list(self._debouncing.items()):
            timer.cancel()
            self._enqueue(user_id)
        self._debouncing.clear()
        try:
            async with asyncio.timeout(grace_s):
                await self.idle()
        except TimeoutError:
            log.warning(
                "analysis scheduler stopping: dropping %d queued and %d running analyses",
                len(self._queued),
                len(self._running),
            )
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        self._queued.clear()
        self._running.clear()
        self._rerun.clear()
        self._gauge()
        self._idle.set()

    # -- inside ----------------------------------------------------------------------

    async def _debounce(self, user_id: str) -> None:
        try:
            delay = self.debounce_s if self.debounce_of is None else self.debounce_of(user_id)
            if delay:
                await self._sleep(delay)
        finally:
            # On cancellation stop() has taken the user over already.
            if self._debouncing.get(user_id) is asyncio.current_task():
                del self._debouncing[user_id]
                self._enqueue(user_id)

    def _enqueue(self, user_id: str) -> None:
        self._queued.add(user_id)
        self._queue.put_nowait(user_id)
        self._gauge()

    async def _work(self) -> None:
        while True:
            user_id = await self._queue.get()
            self._queued.discard(user_id)
            self._running.add(user_id)
            force = user_id in self._force
            self._force.discard(user_id)
            self._gauge()
            started = self._clock()
            try:
                await self._analyse(user_id, force)
            except Exception:
                log.exception("analysis of %s failed", user_id)
                if self._metrics is not None:
                    self._metrics.analysis_errors.inc()
            finally:
                if self._metrics is not None:
                    self._metrics.analysis_seconds.observe(self._clock() - started)
                self._running.discard(user_id)
                self.completed += 1
                if user_id in self._rerun:
                    self._rerun.discard(user_id)
                    if self._accepting:
                        self.schedule(user_id)
                    else:
                        self._enqueue(user_id)  # stopping: run it now, within the grace
                self._gauge()
                if self.is_idle():
                    self._idle.set()

    def _gauge(self) -> None:
        if self._metrics is not None:
            self._metrics.analysis_queue.set(self.pending)
            self._metrics.analysis_running.set(len(self._running))

    def _coalesced(self) -> None:
        if self._metrics is not None:
            self._metrics.analysis_coalesced.inc()

    def _drop(self, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.analysis_dropped.labels(reason).inc()
