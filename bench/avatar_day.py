"""The avatar saga over a scripted day, and the state-change-to-image latency at a watch.

Part 1, in process (no sockets): 100 users on SQLite with the local renderer and local media
live a scripted day (07:00-23:00). Each user's day is a seeded walk through plausible
(state, mood, energy) situations, one change every 20-60 minutes; changes are committed in
time order, one 15-minute slot at a time, through :class:`StateService` (cause ``reactor``),
which starts the saga exactly as in the server. Reported: changes, sagas, generations, cache
hit ratio, generation time and commit → ``ready`` commit time.

Part 2, on a live server (uvicorn on loopback, local renderer): a watch connection, and for
each of the day's distinct situations a commit through ``POST /v1/demo/users/{id}/state``;
the time from sending the POST to the delta carrying ``image_url`` at the watch, for a cache
miss (first time) and a cache hit (a second user in the same situation).

Run: ``python -m bench.avatar_day [--users 100] [--seed 7]``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from brain.avatar.local import LocalRenderer
from server.avatar.saga import CAUSE, AvatarSaga, Target
from server.avatar.stage import SAGA
from server.broker.memory import MemoryBroker
from server.media.local import LocalMediaStore
from server.metrics import Metrics
from server.push.hub import Hub
from server.state import StateService
from server.store.base import UserState
from server.store.sqlite import SQLiteStore

SPECIES = ("fox", "fox", "fox", "cat", "cat", "bear", "rabbit", "panda")
"""Base avatars, weighted: most users keep the default fox."""

SITUATIONS: dict[str, list[tuple[str, str, int, float]]] = {
    # From a situation: the next (state, mood, energy) and its weight.
    "morning": [("calm", "content", 75, 3), ("exercising", "energized", 80, 1)],
    "work": [
        ("calm", "content", 60, 4),
        ("stressed", "anxious", 55, 2),
        ("fatigued", "tired", 30, 1),
        ("calm", "happy", 65, 1),
    ],
    "evening": [
        ("resting", "content", 45, 3),
        ("exercising", "energized", 70, 1),
        ("resting", "tired", 25, 2),
        ("calm", "happy", 50, 1),
    ],
    "night": [("sleeping", "sleepy", 20, 4), ("resting", "tired", 25, 1)],
}


def period(minute: int) -> str:
    hour = minute // 60
    if hour < 9:
        return "morning"
    if hour < 18:
        return "work"
    if hour < 22:
        return "evening"
    return "night"


def script_day(users: int, seed: int) -> list[tuple[int, str, tuple[str, str, int]]]:
    """(minute of day, user, (state, mood, energy)) for every change, in time order."""
    rng = random.Random(seed)
    events = []
    for n in range(users):
        user = f"user{n:03d}"
        minute = 7 * 60 + rng.randrange(0, 30)
        while minute < 23 * 60:
            options = SITUATIONS[period(minute)]
            state, mood, energy, _ = rng.choices(options, weights=[o[3] for o in options])[0]
            events.append((minute, user, (state, mood, energy + rng.randrange(-5, 6))))
            minute += rng.randrange(20, 61)
    return sorted(events)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


async def day(users: int, seed: int, root: Path) -> dict[str, Any]:
    """Part 1: the scripted day in process."""
    rng = random.Random(seed + 1)
    metrics = Metrics()
    store = SQLiteStore(root / "day.sqlite3")
    await store.open()
    broker = MemoryBroker()
    hub = Hub(broker, metrics)
    await hub.start()
    state = StateService(store, hub, metrics, time.time)
    media = LocalMediaStore(root / "media", base_url="http://127.0.0.1:8000/media")
    saga = AvatarSaga(state, store, media, LocalRenderer(), metrics, workers=2)
    started: dict[str, float] = {}
    ready_after: list[float] = []

    async def timing(previous: UserState, committed: UserState, cause: str) -> None:
        if cause != CAUSE:
            started[committed.user_id] = time.perf_counter()
        elif committed.avatar_status == "ready" and committed.user_id in started:
            ready_after.append(time.perf_counter() - started.pop(committed.user_id))

    state.listeners += [saga.on_commit, timing]
    for n in range(users):
        species = rng.choice(SPECIES)
        current = await state.current(f"user{n:03d}")
        await state.set_profile(current.user_id, replace(current.profile, base_avatar=species))
    events = script_day(users, seed)
    wall = time.perf_counter()
    slot_events: dict[int, list[tuple[str, tuple[str, str, int]]]] = {}
    for minute, user, situation in events:
        slot_events.setdefault(minute // 15, []).append((user, situation))
    for slot in sorted(slot_events):
        for user, (st, mood, energy) in slot_events[slot]:
            changes = {"state": st, "mood": mood, "energy": max(0, min(100, energy))}
            await state.update(user, lambda _c, ch=changes: ch, cause="reactor")
        await saga.idle()
    wall = time.perf_counter() - wall
    await saga.close()
    await broker.close()
    await store.close()
    hits = metrics.avatar_cache.labels("hit")._value.get()
    misses = metrics.avatar_cache.labels("miss")._value.get()
    generations = metrics.avatar_generations.labels("ok")._value.get()
    gen_hist = metrics.avatar_generation_seconds
    gen_sum = next(
        s.value for m in gen_hist.collect() for s in m.samples if s.name.endswith("_sum")
    )
    return {
        "users": users,
        "changes": len(events),
        "sagas": int(hits + misses),
        "generations": int(generations),
        "cache_hits": int(hits),
        "cache_misses": int(misses),
        "hit_ratio": hits / (hits + misses) if hits + misses else 0.0,
        "generation_mean_ms": 1000 * gen_sum / generations if generations else 0.0,
        "ready_p50_ms": 1000 * pct(ready_after, 0.5),
        "ready_p95_ms": 1000 * pct(ready_after, 0.95),
        "wall_s": wall,
    }


async def live_latency(root: Path) -> dict[str, Any]:
    """Part 2: POST on the demo route → delta with ``image_url`` at a watch, live server."""
    from server.avatar.stage import avatar_stage
    from server.settings import Settings
    from tests.avatar_saga.conftest import post_state
    from tests.conftest import SECRET, recv_op, start_server

    settings = Settings(data_dir=root / "live", secret=SECRET, port=0, log_level="warning")
    # One situation per distinct avatar (state, mood, band), leaving out the initial one
    # (it starts no saga), so the first POST of each is a real cache miss.
    by_target: dict[Target, tuple[str, str, int]] = {Target.of(UserState.initial("x")): ("", "", 0)}
    for _, _, (st, mood, energy) in script_day(10, 3):
        energy = max(0, min(100, energy))
        by_target.setdefault(
            Target.of(UserState("x", state=st, mood=mood, energy=energy)), (st, mood, energy)
        )
    situations = [s for s in by_target.values() if s[0]]
    miss: list[float] = []
    hit: list[float] = []
    async with start_server(settings, stages=[avatar_stage]) as live, live.http() as http:
        for n, (st, mood, energy) in enumerate(situations):
            for user, into in ((f"a{n}", miss), (f"b{n}", hit)):
                ws = await live.connect(user, "watch")
                sent = time.perf_counter()
                await post_state(http, user, state=st, mood=mood, energy=energy)
                while "image_url" not in (await recv_op(ws, "delta"))["changes"]:
                    pass
                into.append(time.perf_counter() - sent)
                await ws.close()
        await live.services.parts[SAGA].idle()
    return {
        "situations": len(situations),
        "miss_p50_ms": 1000 * statistics.median(miss),
        "miss_max_ms": 1000 * max(miss),
        "hit_p50_ms": 1000 * statistics.median(hit),
        "hit_max_ms": 1000 * max(hit),
    }


async def main_async(users: int, seed: int) -> None:
    with tempfile.TemporaryDirectory(prefix="avatar-day-") as tmp:
        root = Path(tmp)
        latency = await live_latency(root)
        print("## Live: demo POST → image_url delta at the watch (local renderer)")
        for key, value in latency.items():
            print(f"- {key}: {value:.1f}" if isinstance(value, float) else f"- {key}: {value}")
        result = await day(users, seed, root)
        print("\n## Scripted day in process (local renderer, SQLite)")
        for key, value in result.items():
            print(f"- {key}: {value:.3f}" if isinstance(value, float) else f"- {key}: {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    asyncio.run(main_async(args.users, args.seed))


if __name__ == "__main__":
    main()
