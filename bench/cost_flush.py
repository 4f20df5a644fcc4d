"""What the cost meter's flush costs at a fleet's size, and how long it holds the event loop.

    python -m bench.cost_flush                       # 19,800 users pushed to, 2,000 commits/s
    python -m bench.cost_flush --users 4000

In process, on uvloop, with the server's GC settings (``gc.freeze()``, thresholds 50,000 /
20 / 1,000): a :class:`~server.cost.CostMeter` whose push counts hold ``--users`` users
(as after ten seconds of deltas to every device) flushes into a real SQLite store while a
committer writes a state about every 0.5 ms (the commit path's group commits are running,
as in ``bench.push_latency``). Prints the flush's wall and process CPU time, and the event
loop's lag (a 1 ms sleep's overshoot) during it: max and p99. Prints only; writes no file.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import pathlib
import tempfile
import time
from dataclasses import replace

import uvloop
from prometheus_client import CollectorRegistry

from brain.tiers import DEFAULT_TIERS
from server.cost import CostMeter
from server.push.hub import PushCounts
from server.store.base import UserState
from server.store.sqlite import SQLiteStore
from server.tiers import TierBook


async def run(users: int) -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 1000)  # as server/runner.py
    with tempfile.TemporaryDirectory() as directory:
        store = SQLiteStore(pathlib.Path(directory) / "store.sqlite3")
        await store.open()
        meter = CostMeter(CollectorRegistry(), TierBook(DEFAULT_TIERS))
        meter.pushes = PushCounts()
        for i in range(users):
            meter.pushes.add(f"u{i}", 2, 300)
        lags: list[float] = []
        done = asyncio.Event()

        async def watch_the_loop() -> None:
            while not done.is_set():
                started = time.perf_counter()
                await asyncio.sleep(0.001)
                lags.append(time.perf_counter() - started - 0.001)

        async def commit() -> None:
            version = 0
            while not done.is_set():
                version += 1
                state = replace(UserState.initial("committer"), version=version).rehashed()
                await store.put_state(state, version - 1)
                await asyncio.sleep(0.0005)

        tasks = [asyncio.create_task(watch_the_loop()), asyncio.create_task(commit())]
        await asyncio.sleep(0.5)
        lags.clear()
        cpu, wall = time.process_time(), time.perf_counter()
        written = await meter.flush(store)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        done.set()
        await asyncio.gather(*tasks)
        await store.close()
    lags.sort()
    p99 = lags[len(lags) * 99 // 100]
    print(
        f"flush of {written:,} user-days: {wall * 1000:.0f} ms wall, {cpu * 1000:.0f} ms CPU;"
        f" event loop lag max {lags[-1] * 1000:.1f} ms, p99 {p99 * 1000:.1f}"
        f" ms; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=19_800)
    args = parser.parse_args()
    uvloop.run(run(args.users))


if __name__ == "__main__":
    main()
