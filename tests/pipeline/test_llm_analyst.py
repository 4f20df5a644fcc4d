"""The pipeline with Claude: the real anthropic SDK against the local fake Messages API."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

from brain.scenarios import generate
from server.analysis.pipeline import PIPELINE, Analysed, Pipeline, pipeline_stage
from server.settings import Settings
from tests.conftest import auth, recv_op, start_server
from tests.fakes.anthropic_api import FakeAnthropicApi
from tests.pipeline.helpers import STRESSED, analysed_through, send_frames

MINUTE = 60_000
MODEL = "claude-haiku-4-5"
"""Not the settings default: SDK 2.12 warns that claude-sonnet-4-5 is deprecated."""


async def test_the_llm_answer_is_committed_and_the_persona_follows_the_profile(
    settings: Settings, api: FakeAnthropicApi
) -> None:
    api.default_input = dict(STRESSED)
    llm = replace(settings, analyst="anthropic", anthropic_model=MODEL, debounce_ms=1)
    frames = generate("stress", start_ms=int(time.time() * 1000) - 20 * MINUTE, minutes=15)
    async with start_server(llm, stages=[pipeline_stage]) as live:
        pipeline: Pipeline = live.services.parts[PIPELINE]
        phone = await live.connect("dee", "phone")
        watch = await live.connect("dee", "watch")
        await send_frames(phone, frames, batch=30)
        await analysed_through(pipeline, "dee", frames[-1].ts)

        delta = await recv_op(watch, "delta")
        assert delta["changes"]["state"] == "stressed"
        assert delta["changes"]["reasoning"] == STRESSED["reasoning"]
        state = await live.services.state.current("dee")
        assert (state.state, state.mood, state.energy, state.source) == (
            "stressed",
            "anxious",
            48,
            "llm",
        )
        assert "encouraging coach" in api.requests[-1].system
        calls = api.calls

        forced: list[Analysed] = []
        done = asyncio.Event()

        def on_analysed(result: Analysed) -> None:
            if result.force:
                forced.append(result)
                done.set()

        pipeline.listeners.append(on_analysed)
        async with live.http() as http:
            put = await http.put(
                "/v1/demo/users/dee/profile",
                json={"style": "strict", "tone": "direct"},
                headers=auth("dee", "service"),
            )
            assert put.status_code == 200, put.text
            post = await http.post(
                "/v1/demo/users/dee/analyse", json={"force": True}, headers=auth("dee", "service")
            )
            assert post.status_code == 202, post.text
        async with asyncio.timeout(10):
            await done.wait()
            await pipeline.idle()
        assert api.calls == calls + 1  # a new persona is a cache miss
        assert "strict coach" in api.requests[-1].system
        assert forced[0].fallback is None and not forced[0].cached
        metrics = live.app.state.metrics
        assert metrics.llm_calls.labels(llm.anthropic_model, "ok")._value.get() == api.calls
        assert metrics.analyses.labels("llm")._value.get() >= 2
        await phone.close()
        await watch.close()


async def test_an_llm_failure_falls_back_to_the_rules(
    settings: Settings, api: FakeAnthropicApi
) -> None:
    api.fail(400, times=100)  # not retryable: one attempt per analysis
    llm = replace(settings, analyst="anthropic", anthropic_model=MODEL, debounce_ms=1)
    frames = generate("stress", start_ms=int(time.time() * 1000) - 20 * MINUTE, minutes=15)
    async with start_server(llm, stages=[pipeline_stage]) as live:
        pipeline: Pipeline = live.services.parts[PIPELINE]
        phone = await live.connect("eve", "phone")
        await send_frames(phone, frames, batch=30)
        await analysed_through(pipeline, "eve", frames[-1].ts)
        state = await live.services.state.current("eve")
        assert (state.state, state.source) == ("stressed", "rules")
        assert live.app.state.metrics.llm_fallbacks.labels("error")._value.get() >= 1
        await phone.close()


async def test_the_pipeline_asks_claude_only_when_the_window_is_worth_it(
    settings: Settings, api: FakeAnthropicApi
) -> None:
    """The trigger gate is wired: more frames of the same situation are answered from
    Claude's last answer (fallback ``untriggered``), without a call."""
    api.default_input = dict(STRESSED)
    llm = replace(settings, analyst="anthropic", anthropic_model=MODEL, debounce_ms=1)
    now = int(time.time() * 1000)
    first = generate("stress", start_ms=now - 20 * MINUTE, minutes=15)
    more = generate("stress", start_ms=first[-1].ts + 1_000, minutes=1)
    async with start_server(llm, stages=[pipeline_stage]) as live:
        pipeline: Pipeline = live.services.parts[PIPELINE]
        phone = await live.connect("eve", "phone")
        seq = await send_frames(phone, first, batch=30)
        await analysed_through(pipeline, "eve", first[-1].ts)
        calls = api.calls
        assert calls >= 1
        await send_frames(phone, more, batch=30, seq=seq)
        await analysed_through(pipeline, "eve", more[-1].ts)
        assert api.calls == calls  # the same situation: no new call
        metrics = live.app.state.metrics
        assert metrics.llm_fallbacks.labels("untriggered")._value.get() >= 1
        assert (await live.services.state.current("eve")).source == "llm"
        await phone.close()
