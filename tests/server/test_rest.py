"""REST API v1, the legacy polling API, and the operational endpoints."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from tests.conftest import LiveServer, auth, token
from tests.server.conftest import commit, frame, now_ms


async def test_post_frames_answers_version_and_state_hash(live_server: LiveServer) -> None:
    async with live_server.http() as client:
        state = await commit(client, "alice", mood="happy")
        t0 = now_ms() - 5000
        response = await client.post(
            "/v1/users/alice/frames",
            json={"frames": [frame(t0), frame(t0 + 1, hr=999)]},
            headers=auth("alice", "watch"),
        )
    assert response.status_code == 200
    body = response.json()
    assert body["accepted"] == 1
    assert [(r["index"], r["field"]) for r in body["rejected"]] == [(1, "hr")]
    assert body["version"] == state["version"]
    assert body["state_hash"] == state["state_hash"]
    assert response.headers["etag"] == f'"{state["state_hash"]}"'
    rows = await live_server.services.store.frames_between("alice", t0, t0 + 5, now_ms=now_ms())
    assert [f.ts for f in rows] == [t0]


async def test_post_frames_with_only_bad_frames_is_422(live_server: LiveServer) -> None:
    async with live_server.http() as client:
        response = await client.post(
            "/v1/users/alice/frames", json=[{"ts": now_ms(), "hr": 1}], headers=auth("alice")
        )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["rejected"][0]["field"] == "hr"


async def test_etag_and_if_none_match_give_304(live_server: LiveServer) -> None:
    async with live_server.http() as client:
        await commit(client, "alice", mood="happy")
        first = await client.get("/v1/users/alice/state", headers=auth("alice"))
        assert first.status_code == 200
        etag = first.headers["etag"]
        assert etag == f'"{first.json()["state_hash"]}"'
        again = await client.get(
            "/v1/users/alice/state", headers={**auth("alice"), "If-None-Match": etag}
        )
        assert again.status_code == 304
        assert again.headers["etag"] == etag
        await commit(client, "alice", mood="tired")
        changed = await client.get(
            "/v1/users/alice/state", headers={**auth("alice"), "If-None-Match": etag}
        )
        assert changed.status_code == 200
        assert changed.json()["mood"] == "tired"


def watching(live: LiveServer) -> asyncio.Event:
    """An event set once a long-poll has started watching and read the current state."""
    hub = live.services.hub
    state = live.services.state  # its read: from memory (the kept state) or the store
    event = asyncio.Event()
    original_watch = hub.watch
    original_get = state.current
    inside = False

    @asynccontextmanager
    async def watch(user_id: str) -> AsyncIterator[Any]:
        nonlocal inside
        async with original_watch(user_id) as w:
            inside = True
            try:
                yield w
            finally:
                inside = False

    async def current(user_id: str) -> Any:
        result = await original_get(user_id)
        if inside:
            event.set()
        return result

    hub.watch = watch  # type: ignore[method-assign]
    state.current = current  # type: ignore[method-assign]
    return event


async def test_long_poll_wakes_on_a_change(live_server: LiveServer) -> None:
    async with live_server.http() as client:
        current = await commit(client, "alice", mood="happy")
        etag = f'"{current["state_hash"]}"'
        headers = {**auth("alice"), "If-None-Match": etag}
        started = time.monotonic()
        waiting = watching(live_server)
        poll = asyncio.create_task(client.get("/v1/users/alice/state?wait=5", headers=headers))
        # The poll is held: it is watching (and has read the state) before the change.
        await asyncio.wait_for(waiting.wait(), 4)
        assert not poll.done()
        changed = await commit(client, "alice", mood="tired")
        response = await poll
        elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert response.json()["version"] == changed["version"]
    assert response.json()["mood"] == "tired"
    assert elapsed < 4.0


async def test_long_poll_with_since(live_server: LiveServer) -> None:
    async with live_server.http() as client:
        current = await commit(client, "alice", mood="happy")
        # Behind already: answered at once.
        started = time.monotonic()
        behind = await client.get("/v1/users/alice/state?wait=5&since=0", headers=auth("alice"))
        assert behind.status_code == 200
        assert behind.json()["version"] == current["version"]
        assert time.monotonic() - started < 4.0
        # Up to date: held until the next version.
        url = f"/v1/users/alice/state?wait=5&since={current['version']}"
        waiting = watching(live_server)
        poll = asyncio.create_task(client.get(url, headers=auth("alice")))
        await asyncio.wait_for(waiting.wait(), 4)
        assert not poll.done()
        changed = await commit(client, "alice", energy=5)
        response = await poll
    assert response.status_code == 200
    assert response.json()["version"] == changed["version"]


async def test_wait_over_60_is_400(live_server: LiveServer) -> None:
    async with live_server.http() as client:
        response = await client.get("/v1/users/alice/state?wait=61", headers=auth("alice"))
        bad_since = await client.get("/v1/users/alice/state?since=x", headers=auth("alice"))
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert bad_since.status_code == 400


async def test_legacy_sensor_data_and_user_data(live_server: LiveServer) -> None:
    t_s = int(time.time()) - 10
    async with live_server.http() as client:
        one = await client.post(
            "/sensor-data",
            json={"user_id": "alice", "heart_rate": 72, "timestamp": t_s},
            headers=auth("alice", "watch"),
        )
        many = await client.post(
            "/api/v1/user/alice/data",
            json={"readings": [{"heart_rate": 80, "timestamp": t_s + 1}, {"heart_rate": 0}]},
            headers=auth("alice", "watch"),
        )
    assert one.status_code == 200
    assert one.json()["accepted"] == 1
    assert set(one.json()) >= {"status", "state_hash", "timestamp", "image_url", "mood"}
    assert many.status_code == 200
    assert many.json()["accepted"] == 1
    assert [(r["index"], r["field"]) for r in many.json()["rejected"]] == [(1, "hr")]
    rows = await live_server.services.store.frames_between(
        "alice", t_s * 1000, t_s * 1000 + 2000, now_ms=now_ms()
    )
    assert [(f.ts, f.hr, f.device) for f in rows] == [
        (t_s * 1000, 72.0, "legacy-watch"),
        ((t_s + 1) * 1000, 80.0, "legacy-watch"),
    ]


async def test_legacy_avatar_current_state_has_exactly_the_old_fields(
    live_server: LiveServer,
) -> None:
    async with live_server.http() as client:
        state = await commit(client, "alice", mood="happy", image_url="https://x/y.png")
        response = await client.get("/avatar/current-state/alice", headers=auth("alice", "watch"))
    assert response.status_code == 200
    assert response.json() == {
        "state_hash": state["state_hash"],
        "timestamp": state["updated_at"],
        "image_url": "https://x/y.png",
        "mood": "happy",
    }


async def test_legacy_user_state(live_server: LiveServer) -> None:
    async with live_server.http() as client:
        state = await commit(client, "alice", mood="happy", energy=33, actions=["hydrate"])
        response = await client.get("/api/v1/user/alice/state", headers=auth("alice", "watch"))
    assert response.status_code == 200
    body = response.json()
    assert body["user_id"] == "alice"
    assert body["version"] == state["version"]
    assert body["state_hash"] == state["state_hash"]
    assert (body["mood"], body["energy"], body["actions"]) == ("happy", 33, ["hydrate"])


async def test_export_and_delete(live_server: LiveServer) -> None:
    t0 = now_ms() - 5000
    async with live_server.http() as client:
        await commit(client, "alice", mood="happy")
        await client.post(
            "/v1/users/alice/frames", json=[frame(t0), frame(t0 + 1)], headers=auth("alice")
        )
        export = await client.get("/v1/users/alice/export", headers=auth("alice"))
        assert export.status_code == 200
        data = export.json()
        assert data["user_id"] == "alice"
        assert data["state"]["mood"] == "happy"
        assert [f["ts"] for f in data["frames"]] == [t0, t0 + 1]
        forbidden = await client.delete("/v1/users/alice", headers=auth("bob"))
        assert forbidden.status_code == 403
        deleted = await client.delete("/v1/users/alice", headers=auth("alice"))
        assert deleted.status_code == 200
        assert deleted.json() == {"user_id": "alice", "deleted": 3}
        after = (await client.get("/v1/users/alice/export", headers=auth("alice"))).json()
    assert after["state"] is None
    assert after["frames"] == []


async def test_401_and_403_are_problem_json(live_server: LiveServer) -> None:
    async with live_server.http() as client:
        missing = await client.get("/v1/users/alice/state")
        expired = await client.get(
            "/v1/users/alice/state",
            headers={"Authorization": f"Bearer {token('alice', ttl=60, now=time.time() - 3600)}"},
        )
        other = await client.get("/v1/users/alice/state", headers=auth("bob"))
        demo = await client.post(
            "/v1/demo/users/alice/state", json={"mood": "happy"}, headers=auth("alice")
        )
    for response, status in ((missing, 401), (expired, 401), (other, 403), (demo, 403)):
        assert response.status_code == status
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert body["status"] == status
        assert body["type"] == "about:blank"
        assert body["title"] and body["detail"]
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert missing.json()["code"] == "unauthorized"
    assert expired.json()["code"] == "token_expired"


async def test_a_body_over_1_mib_is_413(live_server: LiveServer) -> None:
    body = b'{"frames": [' + b" " * (1024 * 1024) + b"]}"
    async with live_server.http() as client:
        response = await client.post(
            "/v1/users/alice/frames",
            content=body,
            headers={**auth("alice"), "Content-Type": "application/json"},
        )

        # No Content-Length: the limit holds while streaming.
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(20):
                yield b" " * 65536

        streamed = await client.post(
            "/v1/users/alice/frames", content=chunks(), headers=auth("alice")
        )
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert streamed.status_code == 413


async def test_health_ready_metrics_openapi(live_server: LiveServer) -> None:
    async with live_server.http() as client:
        health = await client.get("/healthz")
        ready = await client.get("/readyz")
        metrics = await client.get("/metrics")
        spec = await client.get("/openapi.json")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert (ready.status_code, ready.json()["status"]) == (200, "ready")
    assert metrics.status_code == 200
    assert "companion_connections" in metrics.text
    assert spec.status_code == 200
    document = spec.json()
    assert document["openapi"].startswith("3.")
    assert "/v1/users/{user_id}/frames" in document["paths"]


async def test_demo_state_rejects_bad_fields_naming_them(live_server: LiveServer) -> None:
    cases = {
        "image_url": "javascript:alert(1)",
        "state": "ecstatic",
        "energy": 101,
        "colour": "red",
    }
    async with live_server.http() as client:
        for field, value in cases.items():
            response = await client.post(
                "/v1/demo/users/alice/state", json={field: value}, headers=auth("alice", "service")
            )
            assert response.status_code == 422, field
            assert response.json()["detail"].startswith(f"{field}:")
        state = await client.get("/v1/users/alice/state", headers=auth("alice"))
    assert state.json()["version"] == 0


def test_openapi_documents_every_http_route() -> None:
    import re

    from starlette.routing import Mount, Route

    from server.app import api_document, routes

    documented = api_document()["paths"]
    for route in routes():
        if isinstance(route, Route):
            path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)  # {key:path} is {key}
            assert path in documented, route.path
            methods = {m.lower() for m in route.methods or ()} - {"head"}
            assert methods <= set(documented[path]), route.path
        elif isinstance(route, Mount):
            assert any(p.startswith(route.path + "/{") for p in documented), route.path
