"""The seeds' clients, unchanged: their REST paths and shapes, their socket path, their
demo forms and spellings, and a ``timestamp`` a polling watch can compare."""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import datetime

import websockets

from server.analysis.pipeline import pipeline_stage
from server.settings import Settings
from tests.conftest import LiveServer, auth, recv, send, start_server, token
from tests.server.conftest import commit


async def test_seed_user_state_has_pet_state_and_health_metrics(live_server: LiveServer) -> None:
    async with live_server.http() as client:
        fresh = (await client.get("/api/v1/user/alice/state", headers=auth("alice"))).json()
        state = await commit(client, "alice", state="stressed", mood="anxious", energy=41)
        response = await client.get("/api/v1/user/alice/state", headers=auth("alice", "watch"))
    body = response.json()
    assert response.status_code == 200
    assert body["pet_state"]["mood"] == "anxious"
    assert body["pet_state"]["energy_budget"] == 41
    last_update = datetime.fromisoformat(body["pet_state"]["last_update"])
    assert int(last_update.timestamp() * 1000) == state["updated_at"]
    assert body["health_metrics"] == {
        "hrv_trend": None,
        "sleep_hours": None,
        "stress_level": "high",
    }
    # The state fields and the polling fields are there too, for the newer legacy clients.
    assert (body["user_id"], body["version"], body["state"]) == ("alice", 1, "stressed")
    assert body["timestamp"] == state["updated_at"]
    assert fresh["pet_state"]["last_update"] is None
    assert fresh["health_metrics"]["stress_level"] == "low"


async def test_legacy_timestamp_changes_with_every_version_even_within_a_second(
    settings: Settings,
) -> None:
    base = float(int(time.time()))
    ticks = itertools.count()
    # Every reading of the clock is a millisecond later: all commits fall in one second.
    async with start_server(settings, clock=lambda: base + next(ticks) / 1000) as live:
        async with live.http() as client:
            seen = []
            for mood in ("happy", "tired", "anxious"):
                await commit(client, "alice", mood=mood)
                answer = await client.get("/avatar/current-state/alice", headers=auth("alice"))
                seen.append(answer.json()["timestamp"])
    assert len(set(seen)) == 3
    assert {t // 1000 for t in seen} == {int(base)}
    assert all(isinstance(t, int) for t in seen)


async def test_legacy_routes_take_the_token_as_a_query_parameter(live_server: LiveServer) -> None:
    query = f"?token={token('alice', 'watch')}"
    async with live_server.http() as client:
        await commit(client, "alice", mood="happy")
        upload = await client.post(
            f"/sensor-data{query}", json={"user_id": "alice", "heart_rate": 70}
        )
        data = await client.post(f"/api/v1/user/alice/data{query}", json={"heart_rate": 71})
        poll = await client.get(f"/avatar/current-state/alice{query}")
        state = await client.get(f"/api/v1/user/alice/state{query}")
        other = await client.get(f"/avatar/current-state/bob{query}")
    assert [r.status_code for r in (upload, data, poll, state)] == [200] * 4
    assert upload.json()["accepted"] == data.json()["accepted"] == 1
    assert poll.json()["mood"] == "happy"
    assert other.status_code == 403


async def test_the_seed_socket_path_is_an_alias_of_v1_ws(live_server: LiveServer) -> None:
    async with live_server.http() as client:
        state = await commit(client, "alice", mood="happy")
    url = live_server.ws_url.replace("/v1/ws", "/socket")
    async with websockets.connect(url, additional_headers=auth("alice")) as ws:
        await send(ws, {"op": "hello", "client": "seed-phone"})
        snapshot = await recv(ws)
    assert snapshot["op"] == "snapshot"
    assert snapshot["version"] == state["version"]


async def test_seed_profile_spellings_are_accepted_and_unknown_avatars_refused(
    live_server: LiveServer,
) -> None:
    path = "/v1/demo/users/alice/profile"
    service = auth("alice", "service")
    async with live_server.http() as client:
        seed = await client.put(path, json={"style": "STRICT", "tone": "Direct"}, headers=service)
        owl = await client.put(path, json={"base_avatar": "owl"}, headers=service)
        empty = await client.put(path, json={"base_avatar": ""}, headers=service)
    assert seed.status_code == 200
    assert seed.json()["profile"] == {"style": "strict", "tone": "direct", "base_avatar": "fox"}
    for refused in (owl, empty):
        assert refused.status_code == 400
        assert refused.json()["detail"].startswith("base_avatar:")
    profile = (await live_server.services.state.current("alice")).profile
    assert (profile.style, profile.base_avatar) == ("strict", "fox")


async def test_the_scenario_route_takes_the_seeds_name_and_case(live_server: LiveServer) -> None:
    async with live_server.http() as client:
        response = await client.post(
            "/v1/demo/users/alice/scenario",
            json={"scenario": "STRESS", "minutes": 1},
            headers=auth("alice", "service"),
        )
    assert response.status_code == 200
    assert (response.json()["kind"], response.json()["accepted"]) == ("stress", 2)


async def test_demo_trigger_injects_the_scenario_for_service_or_own_debug_token(
    live_server: LiveServer,
) -> None:
    async with live_server.http() as client:
        by_service = await client.post(
            "/api/v1/demo/trigger",
            json={"user_id": "alice", "scenario": "Exercise", "minutes": 2},
            headers=auth("ops", "service"),
        )
        by_debug = await client.post(
            "/api/v1/demo/trigger", json={"scenario": "stress"}, headers=auth("bob", "debug")
        )
        by_watch = await client.post(
            "/api/v1/demo/trigger", json={"scenario": "stress"}, headers=auth("bob", "watch")
        )
        unknown = await client.post(
            "/api/v1/demo/trigger", json={"scenario": "party"}, headers=auth("bob", "debug")
        )
        export = await client.get("/v1/users/alice/export", headers=auth("alice"))
    assert by_service.status_code == 202
    assert by_service.json() == {
        "status": "accepted",
        "user_id": "alice",
        "scenario": "exercise",
        "accepted": 4,
        "analysis_scheduled": False,  # this server runs no analysis pipeline
    }
    assert (by_debug.status_code, by_debug.json()["user_id"]) == (202, "bob")
    assert by_debug.json()["accepted"] == 20  # ten minutes by default, one frame per 30 s
    assert by_watch.status_code == 403
    assert unknown.status_code == 422
    assert {f["device"] for f in export.json()["frames"]} == {"scenario"}
    assert len(export.json()["frames"]) == 4


async def test_demo_trigger_lets_the_analysis_decide_the_new_state(settings: Settings) -> None:
    async with start_server(settings, stages=[pipeline_stage]) as live, live.http() as client:
        response = await client.post(
            "/api/v1/demo/trigger",
            json={"user_id": "alice", "scenario": "stress", "minutes": 10},
            headers=auth("alice", "service"),
        )
        assert response.status_code == 202
        assert response.json()["analysis_scheduled"] is True
        poll = "/v1/users/alice/state?wait=10&since=0"  # held until the first commit
        async with asyncio.timeout(20):
            while (await client.get(poll, headers=auth("alice"))).json()["version"] == 0:
                pass
        body = (await client.get("/api/v1/user/alice/state", headers=auth("alice", "watch"))).json()
    assert body["state"] == "stressed"
    assert body["health_metrics"]["stress_level"] == "high"
    assert body["source"] == "rules"
    assert time.time() * 1000 - body["timestamp"] < 60_000


async def test_legacy_uploads_are_json_whatever_their_content_type(
    live_server: LiveServer,
) -> None:
    body = b'{"user_id": "alice", "heart_rate": 70}'
    async with live_server.http() as client:
        answers = [
            await client.post(
                "/sensor-data", content=body, headers={**auth("alice"), "Content-Type": kind}
            )
            for kind in ("text/plain", "application/x-www-form-urlencoded", "application/json")
        ]
    assert [r.status_code for r in answers] == [200, 200, 200]


async def test_a_legacy_timestamp_too_far_off_is_rejected_not_a_500(
    live_server: LiveServer,
) -> None:
    """Found by the OpenAPI fuzz: seconds times 1000 overflowed to -inf and crashed the route."""
    async with live_server.http() as client:
        answers = [
            await client.post(
                "/sensor-data",
                content=b'{"user_id": "alice", "heart_rate": 70, "timestamp": %s}' % value,
                headers=auth("alice"),
            )
            for value in (b"-1e308", b"1e308", b"-1", b"1.5e300")
        ]
    assert [r.status_code for r in answers] == [422] * 4
    assert {r.json()["rejected"][0]["field"] for r in answers} == {"ts"}
