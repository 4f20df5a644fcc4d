"""The demo tools end to end against a live server: what each stores, and the story.

The story runs against the full default pipeline (analysis and avatars); the scenario
tests check that a button pressed after any earlier story shows its own state.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import pytest

from brain.scenarios import timelapse
from clients.connect.access import endpoints
from clients.demo import target as demo
from server.settings import Settings
from tests.conftest import LiveServer, start_server, token
from tests.pipeline.helpers import send_frames

HAS_PIPELINE = importlib.util.find_spec("server.analysis.pipeline") is not None


def target(live: LiveServer, user: str = "alice") -> demo.Target:
    return demo.Target(endpoints(live.url), token("ops", "service"), user)


async def stored(live: LiveServer, user: str) -> dict[str, Any]:
    services = live.services
    exported: dict[str, Any] = await services.store.export_user(user, now_ms=services.now_ms())
    return exported


async def test_scenario_stores_ten_minutes_of_frames_ending_now(live_server: LiveServer) -> None:
    before = int(time.time() * 1000)
    answer = await demo.scenario(target(live_server), "stress", 10)
    frames = (await stored(live_server, "alice"))["frames"]
    assert answer["accepted"] == len(frames) == 20
    assert {f["device"] for f in frames} == {"scenario"}
    assert before <= frames[-1]["ts"] <= int(time.time() * 1000)
    assert frames[-1]["ts"] - frames[0]["ts"] == 19 * 30_000
    assert frames[-1]["hr"] > frames[0]["hr"] + 15  # stress: HR climbs with no steps
    assert sum(f["steps"] for f in frames) == 0
    state = await live_server.services.state.current("alice")
    assert state.version == 0  # the tool injects frames; it never writes a state


async def test_scenario_route_takes_the_users_debug_token_but_not_a_phone_token(
    live_server: LiveServer,
) -> None:
    async with live_server.http() as http:
        path, body = "/v1/demo/users/alice/scenario", {"kind": "calm", "minutes": 1}
        own = {"Authorization": f"Bearer {token('alice', 'debug')}"}
        other = {"Authorization": f"Bearer {token('bob', 'debug')}"}
        phone = {"Authorization": f"Bearer {token('alice', 'phone')}"}
        assert (await http.post(path, json=body, headers=own)).status_code == 200
        assert (await http.post(path, json=body, headers=other)).status_code == 403
        assert (await http.post(path, json=body, headers=phone)).status_code == 403
        bad = {"kind": "party", "minutes": 1}
        assert (await http.post(path, json=bad, headers=own)).status_code == 422


async def test_seed_history_uploads_two_weeks_in_batches_of_at_most_500(
    live_server: LiveServer,
) -> None:
    now_ms = int(time.time() * 1000)
    answer = await demo.seed_history(target(live_server), "burnout", 14, now_ms=now_ms)
    frames = (await stored(live_server, "alice"))["frames"]
    assert answer["accepted"] == len(frames) == 14 * 24 * 6
    assert answer["batches"] == 5
    assert now_ms - 14 * 86_400_000 <= frames[0]["ts"] and frames[-1]["ts"] < now_ms
    day = 24 * 6
    first, last = frames[:day], frames[-day:]
    assert statistics.mean(f["hr"] for f in last) > statistics.mean(f["hr"] for f in first) + 8
    assert statistics.mean(f["hrv"] for f in last) < statistics.mean(f["hrv"] for f in first) * 0.6


async def test_profile_sets_coach_style_tone_and_base_avatar(live_server: LiveServer) -> None:
    answer = await demo.set_profile(
        target(live_server), style="strict", tone="direct", base_avatar="PANDA"
    )
    assert answer["profile"] == {
        "style": "strict",
        "tone": "direct",
        "base_avatar": "panda",
        "tier": "free",
    }
    profile = (await live_server.services.state.current("alice")).profile
    assert (profile.style, profile.tone, profile.base_avatar) == ("strict", "direct", "panda")
    await demo.set_profile(target(live_server), style="neutral", tone=None, base_avatar=None)
    profile = (await live_server.services.state.current("alice")).profile
    assert (profile.style, profile.tone) == ("neutral", "direct")


@pytest.mark.parametrize(
    ("kind", "altitude", "speed"), [("hike", (1500, 1700), 1.1), ("flight", (11_000, 11_000), 230)]
)
async def test_environment_stores_frames_with_altitude_weather_and_speed(
    live_server: LiveServer, kind: str, altitude: tuple[float, float], speed: float
) -> None:
    now_ms = int(time.time() * 1000)
    answer = await demo.environment(target(live_server), kind, 10, now_ms=now_ms)
    frames = (await stored(live_server, "alice"))["frames"]
    assert answer["accepted"] == len(frames) == 20
    assert frames[-1]["ts"] == now_ms
    envs = [f["env"] for f in frames]
    assert all(altitude[0] <= e["altitude_m"] <= altitude[1] for e in envs)
    assert {e["speed_mps"] for e in envs} == {speed}
    if kind == "hike":
        assert envs[-1]["altitude_m"] > envs[0]["altitude_m"]
        assert {e["weather"] for e in envs} == {"clear"}
    else:
        assert all(f["spo2"] < 95 for f in frames)  # a pressurised cabin


async def test_cli_mints_a_service_token_when_given_none(
    live_server: LiveServer, spawn: Callable[..., Any]
) -> None:
    child = await spawn(
        "demo", "demo", "profile", "--server", live_server.url, "--user", "erin",
        "--style", "encouraging", "--tone", "gentle", "--base-avatar", "cat", "--json",
    )  # fmt: skip
    assert await child.wait() == 0, child.output()
    assert json.loads(child.lines[-1])["profile"]["base_avatar"] == "cat"


async def test_demo_run_shows_each_chapter_decided_by_the_default_pipeline(
    settings: Settings, spawn: Callable[..., Any]
) -> None:
    """Analysis and avatars on, nothing forced: the watch shows calm, stress, exercise, calm."""
    async with start_server(settings, stages=None) as live:  # None: the default stages
        child = await spawn(
            "demo", "demo", "run", "--server", live.url, "--user", "dana",
            "--token", token("ops", "service"), "--chapter-seconds", "10", "--json",
        )  # fmt: skip
        assert await child.wait(limit_s=120) == 0, child.output()
        result = json.loads(child.lines[-1])
        assert result["ok"] is True, child.output()
        assert result["watch_states"] == ["calm", "stressed", "exercising", "calm"], result
        for chapter in result["chapters"]:
            for device in ("watch-sim", "watch", "feed"):
                assert chapter[f"{device}_s"] is not None and chapter[f"{device}_s"] <= 10
        assert result["watch_buzzes"] >= 4 and result["pushes"] >= 4
        assert result["push_latency_ms_max"] < 2_000
        state = await live.services.state.current("dana")
        assert (state.state, state.source) == ("calm", "rules")
        assert not state.reasoning.startswith("Not enough data")
        frames = (await stored(live, "dana"))["frames"]
        assert {f["device"] for f in frames} == {"demo-watch"}


async def test_demo_run_exits_1_and_names_the_chapter_a_watch_did_not_show(
    live_server: LiveServer, spawn: Callable[..., Any]
) -> None:
    """Without the analysis stage nothing changes the state: chapter 2 (stress) never shows."""
    child = await spawn(
        "demo", "demo", "run", "--server", live_server.url, "--user", "dana",
        "--token", token("ops", "service"), "--chapter-seconds", "2", "--json",
    )  # fmt: skip
    assert await child.wait(limit_s=90) == 1, child.output()
    text = "\n".join(child.lines)
    assert "chapter 2 (stress): the simulated watch did not show stressed" in text
    result = json.loads(next(line for line in child.lines if line.startswith("{")))
    assert result["ok"] is False and result["chapters"][0]["watch-sim_s"] == 0.0


async def test_demo_run_drive_manual_commits_each_chapter_through_the_demo_route(
    live_server: LiveServer, spawn: Callable[..., Any]
) -> None:
    child = await spawn(
        "demo", "demo", "run", "--server", live_server.url, "--user", "erin",
        "--token", token("ops", "service"), "--chapter-seconds", "3", "--drive", "manual",
        "--json",
    )  # fmt: skip
    assert await child.wait(limit_s=90) == 0, child.output()
    result = json.loads(child.lines[-1])
    assert result["watch_states"] == ["calm", "stressed", "exercising", "calm"], result
    state = await live_server.services.state.current("erin")
    assert (state.state, state.source) == ("calm", "manual")


async def wait_for_state(live: LiveServer, user: str, wanted: str, within: float = 20) -> str:
    """Long-poll the user's state until it is ``wanted`` (or the deadline passes)."""
    headers = {"Authorization": f"Bearer {token(user, 'watch')}"}
    seen = ""
    async with live.http() as http, asyncio.timeout(within):
        etag = None
        while seen != wanted:
            extra = {"If-None-Match": etag} if etag else {}
            answer = await http.get(
                f"/v1/users/{user}/state", params={"wait": 5}, headers={**headers, **extra}
            )
            if answer.status_code == 200:
                etag, seen = answer.headers.get("ETag"), answer.json()["state"]
    return seen


async def test_the_stress_scenario_after_an_exercise_story_yields_stressed(
    settings: Settings,
) -> None:
    """The window still holds the story's workout; the newest frames (the scenario) decide."""
    async with start_server(settings, stages=None) as live:
        phone = await live.connect("fay", "phone")
        now = int(time.time() * 1000)
        story = [
            *timelapse("calm", start_ms=now - 20_000, count=20, every_s=0.5, device="demo-watch"),
            *timelapse(
                "exercise", start_ms=now - 10_000, count=20, every_s=0.5, device="demo-watch"
            ),
        ]
        await send_frames(phone, story)
        assert await wait_for_state(live, "fay", "exercising") == "exercising"
        await demo.scenario(target(live, "fay"), "stress", 10)
        assert await wait_for_state(live, "fay", "stressed") == "stressed"
        await phone.close()


async def test_the_exercise_scenario_after_the_stress_scenario_yields_exercising(
    settings: Settings,
) -> None:
    """Two buttons pressed one after the other, as on the debug page: the workout wins."""
    async with start_server(settings, stages=None) as live:
        await demo.scenario(target(live, "gus"), "stress", 10)
        assert await wait_for_state(live, "gus", "stressed") == "stressed"
        await demo.scenario(target(live, "gus"), "exercise", 10)
        assert await wait_for_state(live, "gus", "exercising") == "exercising"


@pytest.mark.skipif(not HAS_PIPELINE, reason="server/analysis/pipeline.py has not landed yet")
async def test_stress_scenario_makes_the_brain_decide_stressed(settings: Settings) -> None:
    async with start_server(settings, stages=None) as live:  # None: the default stages
        await demo.scenario(target(live), "stress", 15)
        async with live.http() as http:
            answer = await http.get(
                "/v1/users/alice/state",
                params={"wait": 20, "since": 0},
                headers={"Authorization": f"Bearer {token('alice', 'watch')}"},
            )
        assert answer.json()["state"] == "stressed"


async def test_cli_takes_the_seeds_demo_forms(
    live_server: LiveServer, spawn: Callable[..., Any]
) -> None:
    """``--scenario stress`` and ``--style STRICT`` (the seeds' spellings) work unchanged."""
    scenario = await spawn(
        "demo", "demo", "scenario", "--scenario", "Stress", "--server", live_server.url,
        "--user", "fay", "--minutes", "2", "--json",
    )  # fmt: skip
    assert await scenario.wait() == 0, scenario.output()
    assert json.loads(scenario.lines[-1])["accepted"] > 0
    profile = await spawn(
        "demo", "demo", "profile", "--server", live_server.url, "--user", "fay",
        "--style", "STRICT", "--tone", "Direct", "--json",
    )  # fmt: skip
    assert await profile.wait() == 0, profile.output()
    assert json.loads(profile.lines[-1])["profile"]["style"] == "strict"
