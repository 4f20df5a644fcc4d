"""Analysis throughput with the rules analyst, and push latency from a change to the watch.

    python -m bench.analysis                        # 2,000 users, 4 workers, 20 latency runs
    python -m bench.analysis --users 10000 --workers 8 --debounce-ms 250
    python -m bench.analysis --only-requests        # the request's cost, 10 vs 3,600 frames

**Request cost** (pure, no server): what one analysis spends turning a window into its
request (features, per-minute trend, latest environment, then the rules), for windows of
10 and 3,600 frames (one watch at 4 Hz, HR, HRV, steps, SpO2 and environment on every
frame), two ways: *from scratch* (a pass over the frames, as before the running
aggregates: ``build_request`` given a plain list) and *running* (``build_request`` given
the window's ``frames``). *Cold*: the first analysis after the window was filled (the
snapshot copies the frame list and brings the trend's prefix sums up to date). *Warm*: the
steady state, 4 new frames (one second at 4 Hz) added and as many evicted before each
analysis; ``window.add`` (which updates the aggregates) is timed separately, per frame.
**The brain beside ingest** models the ingest benchmark's brain work in process CPU time
(contention on a shared machine slows it but does not inflate it): 200 windows fed 400
frames/s each in 80-frame messages and analysed once a second.

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
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from brain.analyst.base import build_request
from brain.analyst.rules import RulesAnalyst
from brain.features import Baseline
from brain.model import Env, Frame, Profile
from brain.rules import assess
from brain.scenarios import generate
from brain.window import Window
from server.analysis.pipeline import PIPELINE, Pipeline, pipeline_stage
from server.broker.memory import MemoryBroker
from server.metrics import Metrics
from server.push.hub import Hub
from server.settings import Settings
from server.state import StateService
from server.store.sqlite import SQLiteStore

MINUTE = 60_000


REQUEST_SIZES = (10, 3_600)
BASELINE = Baseline(resting_hr=60.0, hrv=50.0, hrv_trend=1.0, frames=10_000)
_ENV = Env(altitude_m=120.0, temp_c=21.0, humidity_pct=45.0, speed_mps=0.0, weather="cloudy")


def _frame(i: int, start_ms: int) -> Frame:
    return Frame(
        ts=start_ms + i * 250,
        hr=70 + (i % 40) / 4,
        hrv=45 + (i % 13) / 2,
        steps=i % 3,
        spo2=97.5,
        skin_temp=33.2,
        resp_rate=14.0,
        device="watch-1",
        env=_ENV,
    )


def _analyse(frames: Iterable[Frame], now_ms: int) -> None:
    request = build_request("u", frames, now_ms=now_ms, profile=Profile(), baseline=BASELINE)
    assess(request.features, Profile())


def request_cost(size: int, rounds: int = 200) -> dict[str, float]:
    """Microseconds per analysis (cold and warm, scratch and running) at ``size`` frames."""
    start = 1_700_000_000_000
    frames = [_frame(i, start) for i in range(size + rounds * 4)]
    span_ms = size * 250 + 1  # exactly ``size`` frames of 4 Hz in the window
    out: dict[str, float] = {}
    for way in ("scratch", "running"):
        cold = []
        for _ in range(20):
            window = Window(span_ms=span_ms, max_frames=3_600)
            window.add(frames[:size], now_ms=frames[size - 1].ts)
            began = time.perf_counter()
            _analyse(
                window.frames if way == "running" else list(window.frames), frames[size - 1].ts
            )
            cold.append(time.perf_counter() - began)
        out[f"{way}_cold_us"] = statistics.median(cold) * 1e6
        adding = analysing = 0.0
        for r in range(rounds):
            batch = frames[size + r * 4 : size + r * 4 + 4]
            now = batch[-1].ts
            began = time.perf_counter()
            window.add(batch, now_ms=now)
            added = time.perf_counter()
            _analyse(window.frames if way == "running" else list(window.frames), now)
            analysing += time.perf_counter() - added
            adding += added - began
        out[f"{way}_warm_us"] = analysing / rounds * 1e6
        out[f"{way}_add_us_per_frame"] = adding / (rounds * 4) * 1e6
    return out


def print_request_costs() -> None:
    print("request cost (build_request + rules), microseconds per analysis:")
    print("| frames | from scratch, cold | warm | running, cold | warm | window.add µs/frame |")
    print("|---:|---:|---:|---:|---:|---:|")
    for size in REQUEST_SIZES:
        c = request_cost(size)
        print(
            f"| {size:,} | {c['scratch_cold_us']:,.0f} | {c['scratch_warm_us']:,.0f} "
            f"| {c['running_cold_us']:,.0f} | {c['running_warm_us']:,.0f} "
            f"| {c['running_add_us_per_frame']:.2f} |"
        )


def ingest_model(users: int = 200, per_user_hz: int = 400, seconds: int = 12) -> dict[str, float]:
    """The brain's share of the ingest benchmark, in process CPU: ``users`` windows fed
    ``per_user_hz`` frames/s in 80-frame batches (5 messages/s) and analysed once a second,
    as the server does at 80,000 frames/s with the default debounce. The first seconds fill
    the windows to their 3,600-frame cap and are not counted. Returns CPU seconds per
    second of stream for adding and for analysing."""
    start = 1_700_000_000_000
    step_ms = 1000 // per_user_hz
    windows = [Window() for _ in range(users)]
    adding = analysing = 0.0
    warm_up = 3_600 // per_user_hz + 1
    for second in range(seconds + warm_up):
        counted = second >= warm_up
        for message in range(5):
            first = second * per_user_hz + message * per_user_hz // 5
            batch = [_frame_at(start + (first + i) * step_ms) for i in range(per_user_hz // 5)]
            now = batch[-1].ts
            began = time.process_time()
            for window in windows:
                window.add(batch, now_ms=now)
            if counted:
                adding += time.process_time() - began
        began = time.process_time()
        now = start + (second + 1) * 1000 - step_ms
        for window in windows:
            window.evict(now_ms=now)
            _analyse(window.frames, now)
        if counted:
            analysing += time.process_time() - began
    return {"adding_cpu_per_s": adding / seconds, "analysing_cpu_per_s": analysing / seconds}


def _frame_at(ts: int) -> Frame:
    i = ts // 250
    return Frame(
        ts=ts,
        hr=70 + (i % 40) / 4,
        hrv=45 + (i % 13) / 2,
        steps=i % 3,
        spo2=97.5,
        skin_temp=33.2,
        resp_rate=14.0,
        device="watch-1",
        env=_ENV,
    )


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
        pipeline: Pipeline = live.services.parts[PIPELINE]
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
    parser.add_argument(
        "--only-requests", action="store_true", help="only the request cost, no server"
    )
    args = parser.parse_args()
    print_request_costs()
    model = ingest_model()
    print(
        "the brain beside ingest (200 users x 400 frames/s, 80-frame batches, one analysis "
        f"per user per second): adding {model['adding_cpu_per_s']:.2f} + analysing "
        f"{model['analysing_cpu_per_s']:.2f} CPU seconds per second"
    )
    if args.only_requests:
        return
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
