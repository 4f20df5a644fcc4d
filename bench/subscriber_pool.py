"""Broadcast subscribers spread over worker processes, so the load generator is not the limit.

:class:`SubscriberPool` has the surface :mod:`bench.fanout` needs from
:class:`~bench.subscribers.Subscribers` (``open``, ``wait_round``, ``ready``, ``errors``,
``delivered``, ``latency``, ``close``) but splits the connections over ``processes``
worker processes (``spawn``), each running its share of :class:`Subscribers` on its own
uvloop event loop. The parent talks to each worker over a :func:`multiprocessing.Pipe`
(small pickled commands, read through the event loop's ``add_reader``): open your share,
tell me when round ``n`` reached all of your connections, give me your numbers, close.
Latency histograms come back as :meth:`Histogram.to_dict` and merge exactly (bucket counts
add). :meth:`cpu_seconds` sums the workers' own CPU (``getrusage``), so a benchmark can
report the generator's CPU beside the server's.

Every wait on a worker has a deadline; a worker that dies or does not answer raises
:class:`WorkerError`.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import resource
from collections import Counter
from multiprocessing.connection import Connection
from typing import Any

import uvloop

from bench.subscribers import Subscribers
from clients.load.loadtest import raise_fd_limit
from clients.load.stats import Histogram

ANSWER_TIMEOUT_S = 120.0
"""The longest a worker may take to answer a command (opening its share included)."""


class WorkerError(RuntimeError):
    """A worker process died or did not answer in time."""


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _worker(conn: Connection, dialect: str, base_url: str, token: str) -> None:
    """A worker process: serve the parent's commands until ``close``."""
    raise_fd_limit()

    async def main() -> None:
        subs = Subscribers(dialect, base_url, token)
        inbox: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        loop.add_reader(conn.fileno(), lambda: inbox.put_nowait(conn.recv()))
        while True:
            command = await inbox.get()
            kind = command[0]
            if kind == "open":
                seconds = await subs.open(command[1], command[2])
                conn.send(("opened", subs.ready, dict(subs.errors), seconds))
            elif kind == "round":
                number, seconds = command[1], command[2]
                conn.send(("round", await subs.wait_round(number, subs.ready, seconds)))
            elif kind == "stats":
                conn.send(("stats", subs.delivered, subs.latency.to_dict(), dict(subs.errors)))
            elif kind == "cpu":
                conn.send(("cpu", _own_cpu()))
            elif kind == "close":
                await subs.close()
                loop.remove_reader(conn.fileno())
                conn.send(("closed",))
                return

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


class SubscriberPool:
    """``count`` subscribers of one server over ``processes`` worker processes."""

    def __init__(self, dialect: str, base_url: str, token: str, processes: int) -> None:
        if processes < 1:
            raise ValueError(f"processes must be at least 1, got {processes}")
        self.dialect = dialect
        self.base_url = base_url
        self.token = token
        self.processes = processes
        self.ready = 0
        self.errors: Counter[str] = Counter()
        self.delivered = 0
        self.latency = Histogram()
        self._conns: list[Connection] = []
        self._inboxes: list[asyncio.Queue[tuple[Any, ...]]] = []
        self._procs: list[Any] = []

    async def open(self, count: int, rate: float) -> float:
        """Start the workers and open ``count`` connections at ``rate``/s in all; the seconds
        until every worker had its share ready. Raises :class:`WorkerError`."""
        context = multiprocessing.get_context("spawn")
        loop = asyncio.get_running_loop()
        for _ in range(self.processes):
            parent, child = context.Pipe()
            proc = context.Process(
                target=_worker, args=(child, self.dialect, self.base_url, self.token), daemon=True
            )
            proc.start()
            child.close()
            inbox: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
            loop.add_reader(parent.fileno(), self._reader(parent, inbox))
            self._conns.append(parent)
            self._inboxes.append(inbox)
            self._procs.append(proc)
        shares = [
            count // self.processes + (i < count % self.processes) for i in range(self.processes)
        ]
        answers = await self._ask_each([("open", share, rate / self.processes) for share in shares])
        for _, ready, errors, _seconds in answers:
            self.ready += ready
            self.errors.update(errors)
        return float(max(a[3] for a in answers))

    async def wait_round(self, number: int, count: int, seconds: float) -> bool:
        """Whether every worker's connections got round ``number`` within ``seconds``
        (``count`` is the pool's total and only checked against :attr:`ready`)."""
        del count  # each worker waits for all of its own ready connections
        answers = await self._ask_each([("round", number, seconds)] * self.processes)
        return all(a[1] for a in answers)

    async def cpu_seconds(self) -> float:
        """The CPU seconds all workers have used so far."""
        return float(sum(a[1] for a in await self._ask_each([("cpu",)] * self.processes)))

    async def collect(self) -> None:
        """Fetch and merge every worker's delivered count, latency histogram and errors."""
        self.delivered = 0
        self.latency = Histogram()
        errors: Counter[str] = Counter()
        for _, delivered, latency, worker_errors in await self._ask_each(
            [("stats",)] * self.processes
        ):
            self.delivered += delivered
            self.latency.merge(Histogram.from_dict(latency))
            errors.update(worker_errors)
        self.errors = errors

    async def close(self) -> None:
        """Close every connection and stop the workers (killing one that does not stop)."""
        loop = asyncio.get_running_loop()
        try:
            if self._conns:
                await self._ask_each([("close",)] * self.processes)
        finally:
            for conn in self._conns:
                loop.remove_reader(conn.fileno())
                conn.close()
            for proc in self._procs:
                proc.join(timeout=5)
                if proc.is_alive():
                    proc.kill()
                    proc.join(timeout=5)
            self._conns.clear()
            self._inboxes.clear()
            self._procs.clear()

    def _reader(self, conn: Connection, inbox: asyncio.Queue[tuple[Any, ...]]) -> Any:
        def on_readable() -> None:
            try:
                inbox.put_nowait(conn.recv())
            except (EOFError, OSError):
                asyncio.get_running_loop().remove_reader(conn.fileno())
                inbox.put_nowait(("dead",))

        return on_readable

    async def _ask_each(self, commands: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        for conn, command in zip(self._conns, commands, strict=True):
            conn.send(command)
        try:
            async with asyncio.timeout(ANSWER_TIMEOUT_S):
                answers = [await inbox.get() for inbox in self._inboxes]
        except TimeoutError as exc:
            raise WorkerError(f"a subscriber worker did not answer {commands[0][0]!r}") from exc
        if any(a[0] == "dead" for a in answers):
            raise WorkerError(f"a subscriber worker died during {commands[0][0]!r}")
        return answers
