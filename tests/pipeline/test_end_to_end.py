"""End to end over real sockets: a phone streams scenario frames, a watch gets the deltas."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from brain.model import Frame
from brain.scenarios import generate
from server.analysis.pipeline import PIPELINE, Pipeline, pipeline_stage
from server.settings import Settings
from tests.conftest import auth, recv, recv_op, start_server
from tests.pipeline.helpers import analysed_through, send_frames

MINUTE = 60_000


async def delta_with_state(ws: Any, state: str, within: float = 10) -> tuple[dict[str, Any], int]:
    """Read deltas until one sets ``state``; return it and how many deltas came before."""
    before = 0
    async with asyncio.timeout(within):
        while True:
            delta = await recv_op(ws, "delta", within)
            if delta["changes"].get("state") == state:
                return delta, before
            before += 1


async def no_delta(ws: Any, within: float = 0.2) -> None:
    """Assert nothing but non-delta messages arrive within ``within`` (after idle only)."""
    try:
        while True:
            message = await recv(ws, within)
            assert message["op"] != "delta", message
    except TimeoutError:
        return


@pytest.fixture
def fast(settings: Settings) -> Settings:
    from dataclasses import replace

    return replace(settings, debounce_ms=1, analysis_workers=2)


async def test_stress_then_exercise_reach_the_watch_and_a_steady_state_pushes_nothing(
    fast: Settings,
) -> None:
    start = int(time.time() * 1000) - 50 * MINUTE  # a phone replaying the last hour
    stress = generate("stress", start_ms=start, minutes=15)
    exercise = generate("exercise", start_ms=start + 15 * MINUTE, minutes=30)
    async with start_server(fast, stages=[pipeline_stage]) as live:
        pipeline: Pipeline = live.services.parts[PIPELINE]
        phone = await live.connect("ann", "phone")
        watch = await live.connect("ann", "watch")

        seq = await send_frames(phone, stress)
        await analysed_through(pipeline, "ann", stress[-1].ts)
        delta, _ = await delta_with_state(watch, "stressed")
        assert delta["changes"]["mood"] == "anxious"

        first_half, second_half = exercise[:30], exercise[30:]
        seq = await send_frames(phone, first_half, seq=seq)
        await analysed_through(pipeline, "ann", first_half[-1].ts)
        delta, _ = await delta_with_state(watch, "exercising")
        assert delta["changes"]["mood"] == "energized"
        version = delta["version"]

        commits = live.app.state.metrics.commits.labels("analysis")._value.get()
        await send_frames(phone, second_half, seq=seq)
        await analysed_through(pipeline, "ann", second_half[-1].ts)
        await no_delta(watch)
        assert live.app.state.metrics.commits.labels("analysis")._value.get() == commits
        state = await live.services.state.current("ann")
        assert (state.version, state.state) == (version, "exercising")
        await phone.close()
        await watch.close()


async def test_the_analyse_route_forces_a_new_version(fast: Settings) -> None:
    start = int(time.time() * 1000) - 20 * MINUTE
    async with start_server(fast, stages=[pipeline_stage]) as live:
        pipeline: Pipeline = live.services.parts[PIPELINE]
        phone = await live.connect("bob", "phone")
        frames = generate("stress", start_ms=start, minutes=15)
        await send_frames(phone, frames)
        await analysed_through(pipeline, "bob", frames[-1].ts)
        before = await live.services.state.current("bob")
        async with live.http() as http:
            refused = await http.post("/v1/demo/users/bob/analyse", headers=auth("bob", "phone"))
            assert refused.status_code == 403
            done = asyncio.Event()
            pipeline.listeners.append(lambda a: done.set() if a.force else None)
            answer = await http.post(
                "/v1/demo/users/bob/analyse", json={"force": True}, headers=auth("bob", "service")
            )
            assert answer.status_code == 202, answer.text
            async with asyncio.timeout(10):
                await done.wait()
                await pipeline.idle()
        after = await live.services.state.current("bob")
        assert after.version == before.version + 1
        assert after.state == before.state
        await phone.close()


async def test_a_cold_window_is_refilled_from_the_store(fast: Settings) -> None:
    """After a restart the first analysis sees the frames stored before it."""
    start = int(time.time() * 1000) - 20 * MINUTE
    frames = generate("stress", start_ms=start, minutes=15)
    async with start_server(fast, stages=[]) as live:  # no pipeline: frames only stored
        phone = await live.connect("cat", "phone")
        await send_frames(phone, frames[:-1])
        await phone.close()
    async with start_server(fast, stages=[pipeline_stage]) as live:
        pipeline: Pipeline = live.services.parts[PIPELINE]
        phone = await live.connect("cat", "phone")
        await send_frames(phone, frames[-1:])
        seen = []
        pipeline.listeners.append(seen.append)
        await analysed_through(pipeline, "cat", frames[-1].ts)
        assert seen[-1].frames == len(frames)
        assert (await live.services.state.current("cat")).state == "stressed"
        await phone.close()


async def test_a_first_impression_replaces_not_enough_data_on_the_watch(fast: Settings) -> None:
    """Calm stays calm, content and mid-energy, but the reasoning's evidence moved on."""
    now = int(time.time() * 1000)
    thin = [Frame(ts=now - 30_000 + i * 1000, hr=70.0, hrv=35.0, steps=0) for i in range(2)]
    more = [Frame(ts=now - 20_000 + i * 1000, hr=70.0, hrv=35.0, steps=0) for i in range(20)]
    async with start_server(fast, stages=[pipeline_stage]) as live:
        pipeline: Pipeline = live.services.parts[PIPELINE]
        phone = await live.connect("ann", "phone")
        seq = await send_frames(phone, thin)
        await analysed_through(pipeline, "ann", thin[-1].ts)
        before = await live.services.state.current("ann")
        assert before.reasoning.startswith("Not enough data yet"), before
        await send_frames(phone, more, seq=seq)
        await analysed_through(pipeline, "ann", more[-1].ts)
        after = await live.services.state.current("ann")
        assert (after.state, after.mood, after.energy // 34) == (
            before.state,
            before.mood,
            before.energy // 34,
        )
        assert after.version == before.version + 1
        # However the 20 frames were split between analyses, one version says the evidence
        # moved on (rewording within a first impression commits nothing more).
        assert after.reasoning.startswith("First impression ("), after
        await phone.close()
