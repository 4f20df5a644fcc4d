"""REST under hostile or unlucky conditions: token first, rate limits, who may erase,
store outages, and errors that all speak problem+json."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from server.settings import Settings
from tests.conftest import LiveServer, auth, start_server, token
from tests.server.conftest import commit, errors_in, frame, now_ms

PROBLEM = "application/problem+json"


async def test_sensor_data_checks_the_token_before_the_body(live_server: LiveServer) -> None:
    async with live_server.http() as client:
        no_token_bad_body = await client.post("/sensor-data", content=b"{not json")
        no_token_no_user = await client.post("/sensor-data", json={"heart_rate": 70})
        with_token_bad_body = await client.post(
            "/sensor-data", content=b"{not json", headers=auth("alice", "watch")
        )
        other_user = await client.post(
            "/sensor-data", json={"user_id": "bob", "heart_rate": 70}, headers=auth("alice")
        )
    assert no_token_bad_body.status_code == 401
    assert no_token_no_user.status_code == 401
    assert with_token_bad_body.status_code == 400
    assert other_user.status_code == 403
    for response in (no_token_bad_body, with_token_bad_body, other_user):
        assert response.headers["content-type"] == PROBLEM


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/users/alice/frames"),
        ("POST", "/api/v1/user/alice/data"),
        ("POST", "/v1/demo/users/alice/state"),
        ("PUT", "/v1/demo/users/alice/profile"),
        ("POST", "/v1/demo/users/alice/scenario"),
        ("POST", "/api/v1/demo/trigger"),
    ],
)
async def test_every_body_route_answers_401_before_reading_the_body(
    live_server: LiveServer, method: str, path: str
) -> None:
    async with live_server.http() as client:
        response = await client.request(method, path, content=b"\xff not json")
    assert response.status_code == 401
    assert response.headers["content-type"] == PROBLEM


async def test_a_body_that_is_not_json_media_is_415(live_server: LiveServer) -> None:
    async with live_server.http() as client:
        response = await client.post(
            "/v1/users/alice/frames",
            content=b"ts=1",
            headers={**auth("alice"), "Content-Type": "application/x-www-form-urlencoded"},
        )
        no_type = await client.post(
            "/v1/users/alice/frames",
            content=b'[{"ts": %d, "hr": 70}]' % (now_ms() - 1000),
            headers=auth("alice"),
        )
    assert response.status_code == 415
    assert response.headers["content-type"] == PROBLEM
    assert no_type.status_code == 200  # legacy firmware sends no Content-Type


@pytest.fixture
def tight_settings(settings_with: Callable[..., Settings]) -> Settings:
    return settings_with(rest_rate_per_s=0.5, rest_rate_burst=3)


async def test_rest_is_rate_limited_per_token_with_429_and_retry_after(
    tight_settings: Settings,
) -> None:
    async with start_server(tight_settings) as live, live.http() as client:
        alice_watch = auth("alice", "watch")
        answers = [
            (await client.get("/v1/users/alice/state", headers=alice_watch)).status_code
            for _ in range(5)
        ]
        limited = await client.get("/avatar/current-state/alice", headers=alice_watch)
        # Another device kind of the same user, and another user, have budgets of their own.
        alice_phone = await client.get("/v1/users/alice/state", headers=auth("alice"))
        bob = await client.get("/v1/users/bob/state", headers=auth("bob", "watch"))
        # The budget is the token's, not the URL's: the query-string token counts the same.
        by_query = await client.get(f"/v1/users/alice/state?token={token('alice', 'watch')}")
        # Service tokens (load driver, demo tools) are not limited.
        service = [
            (await client.get("/v1/users/alice/state", headers=auth("ops", "service"))).status_code
            for _ in range(10)
        ]
    assert answers == [200, 200, 200, 429, 429]
    assert limited.status_code == 429
    assert limited.headers["content-type"] == PROBLEM
    assert int(limited.headers["retry-after"]) >= 1
    assert (alice_phone.status_code, bob.status_code) == (200, 200)
    assert by_query.status_code == 429
    assert service == [200] * 10


async def test_unauthenticated_requests_do_not_spend_a_tokens_budget(
    tight_settings: Settings,
) -> None:
    async with start_server(tight_settings) as live, live.http() as client:
        for _ in range(10):
            assert (await client.get("/v1/users/alice/state")).status_code == 401
        ok = await client.get("/v1/users/alice/state", headers=auth("alice"))
    assert ok.status_code == 200


@pytest.mark.parametrize("device", ["watch", "debug"])
async def test_a_watch_or_debug_token_may_not_export_or_erase(
    live_server: LiveServer, device: str
) -> None:
    async with live_server.http() as client:
        await commit(client, "alice", mood="happy")
        export = await client.get("/v1/users/alice/export", headers=auth("alice", device))
        erase = await client.delete("/v1/users/alice", headers=auth("alice", device))
        still = await client.get("/v1/users/alice/state", headers=auth("alice"))
        by_service = await client.delete("/v1/users/alice", headers=auth("alice", "service"))
    assert (export.status_code, erase.status_code) == (403, 403)
    assert erase.headers["content-type"] == PROBLEM
    assert still.json()["mood"] == "happy"
    assert by_service.status_code == 200


async def test_a_store_outage_is_503_problem_with_retry_after(
    live_server: LiveServer, server_log: list[logging.LogRecord]
) -> None:
    async with live_server.http() as client:
        await commit(client, "alice", mood="happy")
        live_server.services.state.forget("alice")  # not kept in memory: reads need the store
        await live_server.services.store.close()  # the store goes away under a running server
        answers = [
            await client.get("/v1/users/alice/state", headers=auth("alice")),
            await client.get("/avatar/current-state/alice", headers=auth("alice", "watch")),
            await client.get("/api/v1/user/alice/state", headers=auth("alice", "watch")),
            await client.get("/v1/users/alice/export", headers=auth("alice")),
            await client.post(
                "/v1/users/alice/frames", json=[frame(now_ms() - 1000)], headers=auth("alice")
            ),
        ]
    for response in answers:
        assert response.status_code == 503, response.request.url
        assert response.headers["content-type"] == PROBLEM
        assert int(response.headers["retry-after"]) >= 1
        assert "store" in response.json()["detail"]
    assert errors_in(server_log) == []


async def test_a_state_kept_in_memory_is_served_through_a_store_outage(
    live_server: LiveServer, server_log: list[logging.LogRecord]
) -> None:
    async with live_server.http() as client:
        committed = await commit(client, "alice", mood="happy")
        await live_server.services.store.close()  # one node: it is alice's only writer
        state = await client.get("/v1/users/alice/state", headers=auth("alice"))
        legacy = await client.get("/avatar/current-state/alice", headers=auth("alice", "watch"))
    assert state.status_code == 200
    assert (state.json()["version"], state.json()["mood"]) == (committed["version"], "happy")
    assert legacy.status_code == 200 and legacy.json()["mood"] == "happy"
    assert errors_in(server_log) == []


async def test_unknown_paths_and_methods_are_problem_json(live_server: LiveServer) -> None:
    async with live_server.http() as client:
        missing = await client.get("/v2/nothing")
        wrong_method = await client.put("/v1/users/alice/state", headers=auth("alice"))
        bad_user = await client.get("/v1/users/a%20b/state", headers=auth("a", "service"))
    assert missing.status_code == 404
    assert wrong_method.status_code == 405
    assert "GET" in wrong_method.headers["allow"]
    assert bad_user.status_code == 404
    for response in (missing, wrong_method, bad_user):
        assert response.headers["content-type"] == PROBLEM


async def test_hostile_query_values_are_400_not_500(live_server: LiveServer) -> None:
    queries = ("wait=nan", "wait=inf", "wait=-1", "since=-1", "since=١٢", "since=" + "9" * 40)
    async with live_server.http() as client:
        answers = [
            await client.get(f"/v1/users/alice/state?{query}", headers=auth("alice"))
            for query in queries
        ]
    assert [r.status_code for r in answers] == [400] * 6


async def test_made_up_frame_keys_never_become_metric_labels(live_server: LiveServer) -> None:
    t0 = now_ms() - 10_000
    frames = [{"ts": t0 + i, "hr": 70, f"made-up-{i}": 1} for i in range(50)]
    frames.append({"ts": t0 + 99, "hr": 999})
    frames.append({"ts": t0 + 98, "hr": 70, "env": {"sneaky": 1}})
    async with live_server.http() as client:
        response = await client.post("/v1/users/alice/frames", json=frames, headers=auth("alice"))
        metrics = (await client.get("/metrics")).text
    assert response.status_code == 422
    assert "made-up" not in metrics and "sneaky" not in metrics
    assert 'companion_frames_rejected_total{field="other"} 51.0' in metrics
    assert 'companion_frames_rejected_total{field="hr"} 1.0' in metrics
