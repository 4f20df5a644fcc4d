"""The state-change driver: commits state changes at a fixed rate through the demo route.

There is no WebSocket for commits, so the driver POSTs ``/v1/demo/users/{id}/state``
(``force: true``, so every request commits a new version) with a service token over a pool
of keep-alive connections (:class:`clients.load.httppool.HTTPPool`, lean enough that the driver
does not take the load generator's core at 1,000 requests/s). HTTP/1.1 has one request at a
time per connection, so the pool grows with the rate (:func:`pool_size`): a change's round
trip is a group commit's few milliseconds, and 16 connections at ~8 ms each cap the driver
near 2,000 changes/s whatever the server could do. It is open-loop: change ``k``
is due at ``start + k / rate`` whatever the server's speed, so a slow server shows up as
latency, not as a lower load; when more than ``max_in_flight`` requests are outstanding the
due change is skipped and counted (``change_skipped``) rather than queued without bound.
Users are taken round-robin.

Each commit's time is remembered by user and state hash, so pollers in the same process can time
how long a change took to reach them.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter, OrderedDict
from collections.abc import Sequence

import orjson

from clients.load.httppool import HTTPPool
from clients.load.stats import RunStats

STATES = (
    ("stressed", "anxious"),
    ("calm", "content"),
    ("exercising", "energized"),
    ("resting", "tired"),
)
MAX_REMEMBERED = 100_000
POOL_ROUND_TRIP_S = 0.03
"""The round trip a change's connection is sized for (a few group commits' worth)."""
MIN_POOL, MAX_POOL = 16, 256


def pool_size(rate: float) -> int:
    """Keep-alive connections for ``rate`` changes/s: enough that each may take
    :data:`POOL_ROUND_TRIP_S` per change (Little's law), within ``MIN_POOL..MAX_POOL``."""
    return max(MIN_POOL, min(MAX_POOL, math.ceil(rate * POOL_ROUND_TRIP_S)))


class StateDriver:
    """Commits ``rate`` state changes per second over ``users``."""

    def __init__(
        self,
        server: str,
        token: str,
        users: list[str],
        rate: float,
        stats: RunStats,
        *,
        max_in_flight: int = 256,
        connections: int | None = None,
    ) -> None:
        if not users or rate <= 0:
            raise ValueError("the driver needs users and a positive rate")
        self._users = users
        self._rate = rate
        self._stats = stats
        self._in_flight = 0
        self._max_in_flight = max_in_flight
        self._tasks: set[asyncio.Task[None]] = set()
        self._next_state: Counter[str] = Counter()
        self.changes_by_user: Counter[str] = Counter()
        """Committed changes per user (for the expected number of pushes)."""
        self.commit_times: OrderedDict[str, float] = OrderedDict()
        """``user:state_hash`` → its latest commit time (epoch ms), newest last, bounded."""
        self._http = HTTPPool(
            server,
            size=connections or pool_size(rate),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )

    async def run(self, duration: float, *, count: int | None = None) -> None:
        """Commit for ``duration`` seconds (or until ``count`` changes were started)."""
        started = time.perf_counter()
        k = 0
        try:
            while count is None or k < count:
                due = started + k / self._rate
                now = time.perf_counter()
                if due - started >= duration:
                    break
                if due > now:
                    await asyncio.sleep(due - now)
                self._start(k)
                k += 1
            if self._tasks:
                await asyncio.wait(self._tasks, timeout=30)
        finally:
            for task in self._tasks:
                task.cancel()
            await self._http.close()

    async def run_schedule(self, schedule: Sequence[tuple[float, str]]) -> None:
        """Commit one change to ``user`` at each ``(seconds from now, user)`` of ``schedule``."""
        started = time.perf_counter()
        try:
            for due, user in sorted(schedule):
                delay = started + due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                self._start_user(user)
            if self._tasks:
                await asyncio.wait(self._tasks, timeout=30)
        finally:
            for task in self._tasks:
                task.cancel()
            await self._http.close()

    def _start(self, k: int) -> None:
        if self._in_flight >= self._max_in_flight:
            self._stats.count("change_skipped")
            return
        self._start_user(self._users[k % len(self._users)])

    def _start_user(self, user: str) -> None:
        n = self._next_state[user]
        self._next_state[user] += 1
        state, mood = STATES[n % len(STATES)]
        body = b'{"state":"%s","mood":"%s","force":true}' % (state.encode(), mood.encode())
        task = asyncio.create_task(self._post(user, body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, user: str, body: bytes) -> None:
        stats = self._stats
        self._in_flight += 1
        started = time.perf_counter()
        try:
            response = await self._http.request("POST", f"/v1/demo/users/{user}/state", body)
        except (OSError, TimeoutError) as exc:
            stats.count("change_errors")
            stats.error(f"change: {type(exc).__name__}")
            return
        finally:
            self._in_flight -= 1
        stats.histograms["change"].add((time.perf_counter() - started) * 1000)
        if response.status != 200:
            stats.count("change_errors")
            stats.error(f"change: http {response.status}")
            return
        data = orjson.loads(response.body)
        stats.count("changes")
        self.changes_by_user[user] += 1
        key = f"{user}:{data['state_hash']}"
        self.commit_times.pop(key, None)
        self.commit_times[key] = float(data["updated_at"])
        if len(self.commit_times) > MAX_REMEMBERED:
            self.commit_times.popitem(last=False)
