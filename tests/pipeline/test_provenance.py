"""The decision history of an analysis names the model that decided and what it cost: Claude
through the real anthropic SDK against the local fake Messages API, or the rules."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from brain.scenarios import generate
from server.analysis.pipeline import PIPELINE, Pipeline, pipeline_stage
from server.history import history_stage
from server.settings import Settings
from tests.conftest import LiveServer, auth, start_server
from tests.fakes.anthropic_api import FakeAnthropicApi
from tests.pipeline.helpers import STRESSED, analysed_through, send_frames

MINUTE = 60_000
MODEL = "claude-haiku-4-5"


async def _analysed_events(live: LiveServer, user: str) -> list[dict[str, Any]]:
    """Stream a stress scenario from ``user``'s phone, wait for its analysis, and return the
    history events the analysis committed (cause ``analysis``), newest first."""
    pipeline: Pipeline = live.services.parts[PIPELINE]
    frames = generate("stress", start_ms=int(time.time() * 1000) - 20 * MINUTE, minutes=15)
    phone = await live.connect(user, "phone")
    try:
        await send_frames(phone, frames, batch=30)
        await analysed_through(pipeline, user, frames[-1].ts)
    finally:
        await phone.close()
    async with live.http() as http:
        response = await http.get(f"/v1/users/{user}/history", headers=auth(user, "phone"))
    assert response.status_code == 200, response.text
    events = [e for e in response.json()["events"] if e["cause"] == "analysis"]
    assert events, response.json()
    return events


async def test_an_llm_decision_records_the_claude_model_and_a_nonzero_cost(
    settings: Settings, api: FakeAnthropicApi
) -> None:
    api.default_input = dict(STRESSED)
    llm = replace(settings, analyst="anthropic", anthropic_model=MODEL, debounce_ms=1)
    async with start_server(llm, stages=[history_stage, pipeline_stage]) as live:
        events = await _analysed_events(live, "dee")
    stressed = next(e for e in events if e["state"] == "stressed")
    assert stressed["source"] == "llm"
    assert stressed["model"] is not None and stressed["model"].startswith(MODEL)
    assert stressed["cost_usd"] > 0
    assert stressed["fallback"] is None
    assert stressed["features"]["hr_mean"] > 0  # the features the model was shown


async def test_a_rules_decision_records_model_rules_and_no_cost(settings: Settings) -> None:
    rules = replace(settings, debounce_ms=1)
    async with start_server(rules, stages=[history_stage, pipeline_stage]) as live:
        events = await _analysed_events(live, "fay")
    assert all((e["model"], e["cost_usd"], e["source"]) == ("rules", 0, "rules") for e in events)
    assert all(e["fallback"] is None and e["features"] for e in events)


async def test_a_failed_llm_call_records_the_rules_and_the_fallback_reason(
    settings: Settings, api: FakeAnthropicApi
) -> None:
    api.fail(400, times=100)  # not retryable: one attempt per analysis, billed nothing
    llm = replace(settings, analyst="anthropic", anthropic_model=MODEL, debounce_ms=1)
    async with start_server(llm, stages=[history_stage, pipeline_stage]) as live:
        events = await _analysed_events(live, "gus")
    stressed = next(e for e in events if e["state"] == "stressed")
    assert (stressed["model"], stressed["source"], stressed["fallback"]) == (
        "rules",
        "rules",
        "error",
    )
    assert stressed["cost_usd"] == 0
