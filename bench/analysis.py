"""Analysis throughput with the rules analyst, and push latency from a change to the watch.

    python -m bench.analysis                        # 2,000 users, 4 workers, 20 latency runs
    python -m bench.analysis --users 10000 --workers 8 --debounce-ms 250

**Throughput** runs the pipeline in-process (SQLite store in a temp dir, memory broker, the
rules analyst): every user's 15 minutes of ``stress`` frames are stored, handed to the
frames hook at once, and the time until the scheduler is idle gives analyses/s. A *cold*
round includes the refill from the store and the 14-day baseline read of each user; a
*warm* round adds 5 minutes of ``exercise`` frames to every held window (every analysis
commits a change: state, delta, broker).

**Latency** runs the real server (uvicorn on loopback, the pipeline stage): a phone has
sent 15 minutes of ``calm``; then it sends the 5 minutes of ``exercise`` that make the
change in one batch, and the time from that send to the watch receiving the
``exercising`` delta is one sample (it includes the debounce, ``--debounce-ms``).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from brain.analyst.rules import RulesAnalyst
from brain.scenarios import generate
from server.analysis.pipeline import Pipeline, pipeline_stage
from server.broker.memory import MemoryBroker
from server.metrics import Metrics
from server.push.hub import Hub
from server.settings import Settings
from server.state import StateService
from server.store.sqlite import SQLiteStore

MINUTE = 60_000


async def throughput(users: int, workers: int, data_dir: Path) -> tuple[float, float]:
    """Analyses per second for a cold and a warm round over ``users`` users."""
    store = SQLiteStore(data_dir / "bench.sqlite3")
    await store.open()
    metrics = Metrics()
    broker = MemoryBroker()
    hub = Hub(broker, metrics)
    await hub.start()
    state = StateService(store, hub, metrics, time.time)
    pipeline = Pipeline(
        store=store,
        state=state,
        analyst=RulesAnalyst(),
        metrics=metrics,
        clock=time.time,
        span_ms=15 * MINUTE,
        workers=workers,
        debounce_s=0,
    )
    pipeline.start()
    start = int(time.time() * 1000) - 25 * MINUTE
    stress = generate("stress", start_ms=start, minutes=15)
    exercise = generate("exercise", start_ms=start + 15 * MINUTE, minutes=5)
    names = [f"user-{i}" for i in range(users)]
    for i in range(0, users, 100):
        await store.put_frames([(u, f) for u in names[i : i + 100] for f in stress])
    rates = []
    for frames in (stress, exercise):
        done_before = pipeline.scheduler.completed
        began = time.perf_counter()
        await pipeline.on_frames({u: frames for u in names})
        await pipeline.idle()
        elapsed = time.perf_counter() - began
        rates.append((pipeline.scheduler.completed - done_before) / elapsed)
    await pipeline.close()
    await broker.close()
    await store.close()
    return rates[0], rates[1]


async def latency(runs: int, debounce_ms: int, data_dir: Path) -> list[float]:
    """Seconds from sending the frames of a change to the watch's delta, one per run."""
    from server.protocol import frame_to_wire
    from tests.conftest import SECRET, recv_op, send, start_server

    settings = Settings(data_dir=data_dir / "latency", secret=SECRET, port=0, log_level="warning")
    settings = replace(settings, debounce_ms=debounce_ms)
    samples = []
    async with start_server(settings, stages=[pipeline_stage]) as live:
        pipeline: Pipeline = live.services.extras["pipeline"]
        for run in range(runs):
            user = f"lat-{run}"
            start = int(time.time() * 1000) - 21 * MINUTE
            calm = generate("calm", start_ms=start, minutes=15, seed=run)
            change = generate("exercise", start_ms=start + 15 * MINUTE, minutes=5, seed=run)
            phone = await live.connect(user, "phone")
            watch = await live.connect(user, "watch")
            await send(
                phone, {"op": "frames", "seq": 0, "frames": [frame_to_wire(f) for f in calm]}
            )
            await recv_op(phone, "ack")
            await pipeline.idle()
            message = {"op": "frames", "seq": 1, "frames": [frame_to_wire(f) for f in change]}
            sent = time.perf_counter()
            await send(phone, message)
            while True:
                delta = await recv_op(watch, "delta")
                if delta["changes"].get("state") == "exercising":
                    break
            samples.append(time.perf_counter() - sent)
            await pipeline.idle()
            await phone.close()
            await watch.close()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--debounce-ms", type=int, default=250)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cold, warm = asyncio.run(throughput(args.users, args.workers, Path(tmp)))
        print(
            f"throughput, rules analyst, {args.users} users, {args.workers} workers: "
            f"cold {cold:,.0f} analyses/s (refill + baseline read), warm {warm:,.0f} analyses/s"
        )
        for debounce in sorted({1, args.debounce_ms}):
            samples = asyncio.run(latency(args.runs, debounce, Path(tmp) / f"d{debounce}"))
            ms = sorted(s * 1000 for s in samples)
            p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
            print(
                f"push latency, last frame of a change -> watch delta, debounce {debounce} ms "
                f"({len(ms)} runs): median {statistics.median(ms):.1f} ms, p95 {p95:.1f} ms, "
                f"max {ms[-1]:.1f} ms"
            )


if __name__ == "__main__":
    main()
