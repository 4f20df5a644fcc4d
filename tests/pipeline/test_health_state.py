"""Health metrics in the state: the real pipeline computes them from the stored days and the
window, the state keeps them, and the REST, seeds' and WebSocket shapes carry them."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from brain.health import HealthMetrics
from brain.model import Action, Assessment, Frame, Mood, State
from brain.scenarios import generate, history
from server.analysis.pipeline import PIPELINE, Pipeline, pipeline_stage
from server.analysis.reactor import changes_for
from server.settings import Settings
from server.store.base import UserState
from tests.brain.test_health import a_night
from tests.conftest import LiveServer, auth, recv_op, start_server
from tests.pipeline.helpers import analysed_through, send_frames

MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR


async def _analyse(live: LiveServer, user: str, stored: list[Frame], window: list[Frame]) -> None:
    """Store ``user``'s past days directly, stream ``window`` from a phone, wait for its
    analysis."""
    pipeline: Pipeline = live.services.parts[PIPELINE]
    await live.services.store.put_frames([(user, f) for f in stored])
    phone = await live.connect(user, "phone")
    try:
        await send_frames(phone, window, batch=30)
        await analysed_through(pipeline, user, window[-1].ts)
    finally:
        await phone.close()


async def _state(live: LiveServer, user: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The user's ``GET /v1/users/{id}/state`` and seeds' ``/api/v1/user/{id}/state``."""
    async with live.http() as http:
        state = await http.get(f"/v1/users/{user}/state", headers=auth(user, "watch"))
        seeds = await http.get(f"/api/v1/user/{user}/state", headers=auth(user, "watch"))
    assert state.status_code == seeds.status_code == 200, (state.text, seeds.text)
    return state.json(), seeds.json()


async def test_a_burnout_fortnight_reads_as_fatigue_and_a_falling_hrv_trend(
    settings: Settings,
) -> None:
    now = int(time.time() * 1000)
    window = generate("calm", start_ms=now - 16 * MIN, minutes=15)
    fast = replace(settings, debounce_ms=1)
    async with start_server(fast, stages=[pipeline_stage]) as live:
        watch = await live.connect("bea", "watch")
        await _analyse(live, "bea", history("burnout", end_ms=now - 20 * MIN), window)
        await _analyse(live, "hal", history("healthy", end_ms=now - 20 * MIN), window)
        delta = await recv_op(watch, "delta")
        stored = await live.services.store.get_state("bea")
        burnout, seeds = await _state(live, "bea")
        healthy, _ = await _state(live, "hal")
        await watch.close()

    assert stored is not None and stored.health is not None  # kept with the state
    assert delta["changes"]["health"] == stored.health.to_dict()  # pushed with the version
    tired, rested = burnout["health"], healthy["health"]
    assert tired["fatigue_score"] >= rested["fatigue_score"] + 30
    assert len(tired["hrv_trend"]) == 3
    assert tired["hrv_trend"][0] > tired["hrv_trend"][-1]  # falling, day by day
    assert max(tired["hrv_trend"]) < min(rested["hrv_trend"])
    assert tired["energy_budget"] < rested["energy_budget"]
    assert seeds["health_metrics"] == {
        "hrv_trend": tired["hrv_trend"],
        "sleep_hours": tired["sleep_hours"],
        "stress_level": tired["stress_level"],
    }
    assert len(seeds["health_metrics"]["sleep_hours"]) == 3
    assert seeds["pet_state"]["energy_budget"] == tired["energy_budget"]


async def test_a_short_night_shows_in_the_sleep_hours_and_the_fatigue(settings: Settings) -> None:
    """Bed at 02:00 instead of 23:00, up at 07:00 both times: the next morning's state has
    three sleep hours fewer for the short sleeper, and more fatigue."""
    midnight = int(time.time() * 1000) // DAY * DAY - 2 * DAY  # a night that ended 2 days ago
    days = history("healthy", end_ms=midnight - DAY)
    window = generate("calm", start_ms=midnight + 11 * HOUR, minutes=15, seed=3)
    fast = replace(settings, debounce_ms=1)
    async with start_server(fast, stages=[pipeline_stage]) as live:
        full_night = a_night(bed_hour=23, wake_hour=7, day_ms=midnight)
        short_night = a_night(bed_hour=2, wake_hour=7, day_ms=midnight)
        await _analyse(live, "fin", days + full_night, window)
        await _analyse(live, "sam", days + short_night, window)
        full, _ = await _state(live, "fin")
        short, seeds = await _state(live, "sam")

    assert abs(short["health"]["sleep_hours"][-1] - (full["health"]["sleep_hours"][-1] - 3)) < 0.2
    assert short["health"]["fatigue_score"] > full["health"]["fatigue_score"] + 15
    assert seeds["health_metrics"]["sleep_hours"][-1] == short["health"]["sleep_hours"][-1]


WHY = "HR climbing while still."
STRESSED = Assessment(State.STRESSED, Mood.ANXIOUS, 55, WHY, (Action.BREATHING,))
SHOWN = HealthMetrics(40, "high", 70, (7.0, 6.5, 5.0), (55.0, 50.0, 45.0), 51)


def test_stress_moving_alone_is_no_new_version_but_new_days_are() -> None:
    current = replace(
        UserState.initial("u"),
        state="stressed",
        mood="anxious",
        energy=55,
        reasoning=WHY,
        health=SHOWN,
    )
    calmer = replace(SHOWN, stress_level="moderate", stress_score=50, energy_budget=57)
    another_night = replace(SHOWN, sleep_hours=(6.5, 5.0, 8.0), fatigue_score=30)
    assert changes_for(current, replace(STRESSED, health=calmer)) is None
    changes = changes_for(current, replace(STRESSED, health=another_night))
    assert changes is not None and changes["health"] == another_night


def test_a_state_change_carries_the_health_metrics_and_none_keeps_them() -> None:
    current = replace(UserState.initial("u"), health=SHOWN)
    changes = changes_for(current, replace(STRESSED, health=SHOWN))
    assert changes is not None and changes["health"] == SHOWN
    without = changes_for(current, STRESSED)  # an analysis that computed none
    assert without is not None and "health" not in without


def test_health_metrics_survive_their_dict_shape() -> None:
    assert HealthMetrics.from_dict(SHOWN.to_dict()) == SHOWN
    assert HealthMetrics.from_dict({}) == HealthMetrics(None, None, None, (), (), None)
