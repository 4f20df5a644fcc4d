"""Scheduler: coalescing, one analysis per user, the worker bound, debounce, force, stop."""

from __future__ import annotations

import asyncio
from collections import Counter

from server.analysis.scheduler import Scheduler
from server.metrics import Metrics
from tests.pipeline.helpers import Gate


async def no_sleep(_: float) -> None:
    """A debounce that only yields to the loop."""
    await asyncio.sleep(0)


class Recorder:
    """An analyse function that records calls and holds each one on a gate."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bool]] = []
        self.gate = Gate()
        self.gate.open()
        self.active: Counter[str] = Counter()
        self.max_active: Counter[str] = Counter()
        self.max_total = 0
        self.started = asyncio.Event()

    def hold(self) -> None:
        self.gate = Gate()

    async def __call__(self, user_id: str, force: bool) -> None:
        self.calls.append((user_id, force))
        self.active[user_id] += 1
        self.max_active[user_id] = max(self.max_active[user_id], self.active[user_id])
        self.max_total = max(self.max_total, sum(self.active.values()))
        self.started.set()
        try:
            await self.gate.wait()
        finally:
            self.active[user_id] -= 1


async def running(scheduler: Scheduler, analyse: Recorder, count: int) -> None:
    """Wait until ``count`` analyses have started and are held."""
    async with asyncio.timeout(5):
        while scheduler.running < count:
            analyse.started.clear()
            await analyse.started.wait()


async def test_schedules_during_an_analysis_coalesce_into_exactly_one_rerun() -> None:
    analyse = Recorder()
    analyse.hold()
    metrics = Metrics()
    scheduler = Scheduler(analyse, workers=4, debounce_s=0.01, sleep=no_sleep, metrics=metrics)
    scheduler.start()
    scheduler.schedule("u1")
    await running(scheduler, analyse, 1)
    for _ in range(50):
        assert scheduler.schedule("u1")
    assert scheduler.pending == 0  # a rerun flag, not a queue entry per schedule
    analyse.gate.open()
    async with asyncio.timeout(5):
        await scheduler.idle()
    assert analyse.calls == [("u1", False), ("u1", False)]
    assert metrics.analysis_coalesced._value.get() == 50
    await scheduler.stop()


async def test_a_user_is_never_analysed_twice_at_once() -> None:
    analyse = Recorder()
    scheduler = Scheduler(analyse, workers=8, debounce_s=0, sleep=no_sleep)
    scheduler.start()
    for _ in range(20):
        for user in ("a", "b"):
            scheduler.schedule(user)
        await asyncio.sleep(0)
    async with asyncio.timeout(5):
        await scheduler.idle()
    assert analyse.max_active["a"] == 1
    assert analyse.max_active["b"] == 1
    await scheduler.stop()


async def test_no_more_analyses_run_than_workers() -> None:
    analyse = Recorder()
    analyse.hold()
    scheduler = Scheduler(analyse, workers=2, debounce_s=0, sleep=no_sleep)
    scheduler.start()
    for i in range(6):
        scheduler.schedule(f"u{i}")
    await running(scheduler, analyse, 2)
    for _ in range(10):
        await asyncio.sleep(0)  # give a third worker every chance to start, if there were one
    assert scheduler.running == 2
    assert scheduler.pending == 4
    analyse.gate.open()
    async with asyncio.timeout(5):
        await scheduler.idle()
    assert analyse.max_total == 2
    assert sorted(u for u, _ in analyse.calls) == [f"u{i}" for i in range(6)]
    await scheduler.stop()


async def test_debounce_waits_once_and_merges_the_schedules_meanwhile() -> None:
    analyse = Recorder()
    sleeps: list[float] = []
    timer = Gate()

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        await timer.wait()

    scheduler = Scheduler(analyse, workers=1, debounce_s=0.25, sleep=sleep)
    scheduler.start()
    scheduler.schedule("u1")
    async with asyncio.timeout(5):
        await timer.arrived.wait()
    for _ in range(5):
        scheduler.schedule("u1")
    assert analyse.calls == []
    assert sleeps == [0.25]  # later schedules neither restart nor add a timer
    assert scheduler.pending == 1
    timer.open()
    async with asyncio.timeout(5):
        await scheduler.idle()
    assert analyse.calls == [("u1", False)]
    await scheduler.stop()


async def test_force_rides_along_with_the_next_analysis_of_the_user() -> None:
    analyse = Recorder()
    analyse.hold()
    scheduler = Scheduler(analyse, workers=1, debounce_s=0, sleep=no_sleep)
    scheduler.start()
    scheduler.schedule("u1")
    await running(scheduler, analyse, 1)
    scheduler.schedule("u1", force=True)
    analyse.gate.open()
    async with asyncio.timeout(5):
        await scheduler.idle()
    assert analyse.calls == [("u1", False), ("u1", True)]
    await scheduler.stop()


async def test_a_failing_analysis_is_counted_and_the_worker_goes_on() -> None:
    calls: list[str] = []

    async def analyse(user_id: str, force: bool) -> None:
        calls.append(user_id)
        if user_id == "bad":
            raise RuntimeError("boom")

    metrics = Metrics()
    scheduler = Scheduler(analyse, workers=1, debounce_s=0, sleep=no_sleep, metrics=metrics)
    scheduler.start()
    scheduler.schedule("bad")
    scheduler.schedule("good")
    async with asyncio.timeout(5):
        await scheduler.idle()
    assert calls == ["bad", "good"]
    assert metrics.analysis_errors._value.get() == 1
    await scheduler.stop()


async def test_stop_runs_pending_work_then_refuses_new_schedules() -> None:
    analyse = Recorder()
    timer = Gate()  # never opened: stop() must not wait out the debounce
    metrics = Metrics()
    scheduler = Scheduler(analyse, workers=1, debounce_s=60, sleep=timer.wait, metrics=metrics)
    scheduler.start()
    scheduler.schedule("u1")
    scheduler.schedule("u2")
    await scheduler.stop(grace_s=5)
    assert sorted(u for u, _ in analyse.calls) == ["u1", "u2"]
    assert not scheduler.schedule("u3")
    assert metrics.analysis_dropped.labels("stopped")._value.get() == 1


async def test_stop_drops_what_does_not_finish_within_the_grace() -> None:
    analyse = Recorder()
    analyse.hold()
    scheduler = Scheduler(analyse, workers=1, debounce_s=0, sleep=no_sleep)
    scheduler.start()
    scheduler.schedule("u1")
    scheduler.schedule("u2")
    await running(scheduler, analyse, 1)
    await scheduler.stop(grace_s=0.05)
    assert analyse.calls == [("u1", False)]
    assert scheduler.is_idle()


async def test_a_full_queue_refuses_new_users() -> None:
    analyse = Recorder()
    analyse.hold()
    metrics = Metrics()
    scheduler = Scheduler(
        analyse, workers=1, debounce_s=0, sleep=no_sleep, max_pending=2, metrics=metrics
    )
    scheduler.start()
    scheduler.schedule("u0")
    await running(scheduler, analyse, 1)
    assert scheduler.schedule("u1")
    assert scheduler.schedule("u2")
    assert not scheduler.schedule("u3")
    assert scheduler.schedule("u1")  # already pending: merged, not refused
    assert metrics.analysis_dropped.labels("full")._value.get() == 1
    analyse.gate.open()
    await scheduler.stop()
