"""The REST watch: in every mode it reaches a new state, and it meters what that cost."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from clients.connect.access import endpoints
from clients.watch.watch import MODES, RestWatch, request_bytes, response_bytes
from tests.clients.conftest import free_port
from tests.conftest import LiveServer, auth, token


async def change_state(live: LiveServer, user: str, **changes: Any) -> dict[str, Any]:
    async with live.http() as http:
        response = await http.post(
            f"/v1/demo/users/{user}/state", json=changes, headers=auth("ops", "service")
        )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.parametrize("mode", MODES)
async def test_watch_reaches_the_new_state_in_each_mode(live_server: LiveServer, mode: str) -> None:
    seen: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    async with httpx.AsyncClient(headers=auth("alice", "watch"), timeout=15) as http:
        watch = RestWatch(
            http, endpoints(live_server.url), "alice", mode=mode,  # type: ignore[arg-type]
            interval=0.2, wait=5, on_change=lambda state, _: seen.put_nowait(state),
        )  # fmt: skip
        task = asyncio.create_task(watch.run(duration=30))
        try:
            async with asyncio.timeout(10):
                await watch.synced.wait()  # it knows the state from before the change
            committed = await change_state(live_server, "alice", state="stressed", mood="anxious")
            async with asyncio.timeout(10):
                state = await seen.get()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert (state["version"], state["state_hash"]) == (
        committed["version"], committed["state_hash"],
    )  # fmt: skip
    assert (state["state"], state["mood"]) == ("stressed", "anxious")
    figures = watch.stats.to_dict()
    assert figures["changes"] == 1
    assert figures["requests"] >= 2
    assert figures["bytes_sent"] > 0 and figures["bytes_received"] > 0
    assert 0 <= figures["latency_ms_max"] < 10_000
    if mode == "piggyback":
        # Every round uploads a frame; the state is fetched only when the hash moved.
        now_ms = live_server.services.now_ms()
        exported = await live_server.services.store.export_user("alice", now_ms=now_ms)
        assert len(exported["frames"]) >= 2


async def test_longpoll_is_answered_by_the_change_not_the_timeout(live_server: LiveServer) -> None:
    async with httpx.AsyncClient(headers=auth("alice", "watch"), timeout=70) as http:
        watch = RestWatch(http, endpoints(live_server.url), "alice", mode="longpoll", wait=60)
        await watch.longpoll_once()  # learns version 0
        held = asyncio.create_task(watch.longpoll_once())
        await change_state(live_server, "alice", mood="happy")
        async with asyncio.timeout(5):  # far below the 60 s hold
            await held
    assert watch.state is not None and watch.state["mood"] == "happy"
    assert watch.stats.requests == 2 and watch.stats.not_modified == 0


async def test_meter_counts_request_and_status_lines_headers_and_bodies(
    live_server: LiveServer,
) -> None:
    async with httpx.AsyncClient(headers=auth("alice", "watch"), timeout=15) as http:
        response = await http.post(
            f"{live_server.url}/v1/users/alice/frames", json={"frames": [{"ts": 1, "hr": 60}]}
        )
    request = response.request
    head = b"POST /v1/users/alice/frames HTTP/1.1\r\n" + b"".join(
        k + b": " + v + b"\r\n" for k, v in request.headers.raw
    )
    assert request_bytes(request) == len(head) + 2 + len(request.content)
    assert response_bytes(response) > len(response.content) + len(b"HTTP/1.1 422 \r\n")
    assert (
        response_bytes(response) - len(response.content)
        == len(f"HTTP/1.1 {response.status_code} {response.reason_phrase}\r\n")
        + sum(len(k) + len(v) + 4 for k, v in response.headers.raw)
        + 2
    )


async def test_watch_cli_prints_figures_as_json(
    live_server: LiveServer, spawn: Callable[..., Any]
) -> None:
    watch_token = token("alice", "watch")
    child = await spawn(
        "watch", "watch", "--server", live_server.url, "--token", watch_token,
        "--mode", "poll", "--interval", "0.2", "--duration", "1", "--json",
    )  # fmt: skip
    assert await child.wait() == 0, child.output()
    figures = json.loads(child.lines[-1])
    assert figures["mode"] == "poll"
    assert figures["requests"] >= 3 and figures["not_modified"] >= 2
    assert figures["requests_per_hour"] > 0 and figures["bytes_per_hour"] > 0


async def test_watch_moves_on_from_a_dead_node_to_a_live_one(live_server: LiveServer) -> None:
    dead = endpoints(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    live = endpoints(live_server.url)
    async with httpx.AsyncClient(headers=auth("alice", "watch"), timeout=15) as http:
        watch = RestWatch(
            http, [dead, live], "alice", mode="poll", interval=0.2,
            rand=lambda: 0.0,  # start at the dead node; zero-length jittered pauses
        )  # fmt: skip
        task = asyncio.create_task(watch.run(duration=30))
        try:
            async with asyncio.timeout(10):
                await watch.synced.wait()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert watch.failover.current == live
    assert watch.stats.errors == 1  # one refused connection, then the live node answered
