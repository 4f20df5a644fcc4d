"""The WebSocket endpoint on a real loopback socket: handshake auth, messages, limits."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from server.protocol import MAX_MESSAGE_BYTES
from server.push.endpoint import MAX_ERRORS
from server.settings import Settings
from server.store.sqlite import SQLiteStore
from tests.conftest import LiveServer, recv, recv_op, send, start_server, token
from tests.server.conftest import close_code, commit, frame, now_ms


async def handshake_status(live: LiveServer, url: str | None = None, **kwargs: Any) -> int:
    with pytest.raises(InvalidStatus) as err:
        ws = await websockets.connect(url or live.ws_url, **kwargs)
        await ws.close()
    return err.value.response.status_code


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


# -- handshake ---------------------------------------------------------------------------


async def test_handshake_without_token_is_401(live_server: LiveServer) -> None:
    assert await handshake_status(live_server) == 401


async def test_handshake_with_malformed_token_is_401(live_server: LiveServer) -> None:
    status = await handshake_status(live_server, additional_headers=bearer("garbage.token.x"))
    assert status == 401


async def test_handshake_with_expired_token_is_401(live_server: LiveServer) -> None:
    expired = token("alice", ttl=60, now=time.time() - 3600)
    assert await handshake_status(live_server, additional_headers=bearer(expired)) == 401


async def test_handshake_for_another_user_is_403(live_server: LiveServer) -> None:
    url = live_server.ws_url + "?user_id=other"
    status = await handshake_status(live_server, url, additional_headers=bearer(token("alice")))
    assert status == 403


async def test_handshake_from_a_foreign_origin_is_403(live_server: LiveServer) -> None:
    status = await handshake_status(
        live_server, additional_headers=bearer(token("alice")), origin="https://evil.example"
    )
    assert status == 403


async def test_handshake_with_query_token_and_own_origin_is_accepted(
    live_server: LiveServer,
) -> None:
    port = live_server.url.rsplit(":", 1)[1]
    url = f"{live_server.ws_url}?token={token('alice', 'debug')}&user_id=alice"
    async with websockets.connect(url, origin=f"http://127.0.0.1:{port}") as ws:
        await send(ws, {"op": "hello", "client": "browser"})
        assert (await recv(ws))["op"] == "snapshot"


# -- hello -------------------------------------------------------------------------------


async def test_hello_answers_a_snapshot(live_server: LiveServer) -> None:
    async with live_server.http() as client:
        await commit(client, "alice", mood="happy", energy=77)
    ws = await live_server.connect("alice", hello=False)
    try:
        await send(ws, {"op": "hello", "client": "test"})
        snapshot = await recv(ws)
        assert snapshot["op"] == "snapshot"
        assert snapshot["user_id"] == "alice"
        assert snapshot["version"] == 1
        assert snapshot["mood"] == "happy"
        assert snapshot["energy"] == 77
        assert snapshot["state_hash"]
    finally:
        await ws.close()


async def test_hello_since_the_current_version_is_uptodate(live_server: LiveServer) -> None:
    async with live_server.http() as client:
        body = await commit(client, "alice", mood="happy")
    ws = await live_server.connect("alice", hello=False)
    try:
        await send(ws, {"op": "hello", "client": "test", "since": body["version"]})
        answer = await recv(ws)
        assert answer == {
            "op": "uptodate",
            "version": body["version"],
            "state_hash": body["state_hash"],
        }
        await send(ws, {"op": "hello", "client": "test", "since": body["version"] - 1})
        assert (await recv(ws))["op"] == "snapshot"
    finally:
        await ws.close()


# -- frames ------------------------------------------------------------------------------


async def stored(live: LiveServer, user: str, start: int, end: int) -> list[Any]:
    return await live.services.store.frames_between(user, start, end, now_ms=now_ms())


async def test_ack_comes_after_the_frames_are_stored(live_server: LiveServer) -> None:
    ws = await live_server.connect("alice")
    try:
        t0 = now_ms() - 10_000
        frames = [frame(t0 + i * 1000, hr=60 + i) for i in range(5)]
        await send(ws, {"op": "frames", "seq": 1, "frames": frames})
        ack = await recv_op(ws, "ack")
        # Nothing awaited between the ack and this read: the frames were there already.
        rows = await stored(live_server, "alice", t0, t0 + 10_000)
        assert ack == {"op": "ack", "seq": 1, "accepted": 5, "rejected": []}
        assert [(f.ts, f.hr) for f in rows] == [(t0 + i * 1000, 60.0 + i) for i in range(5)]
    finally:
        await ws.close()


async def test_partial_batch_lists_rejections_and_stores_the_valid_frames(
    live_server: LiveServer,
) -> None:
    ws = await live_server.connect("alice")
    try:
        t0 = now_ms() - 10_000
        frames = [frame(t0), frame(t0 + 1, hr=999), frame(t0 + 2), {"ts": t0 + 3, "bogus": 1}]
        await send(ws, {"op": "frames", "seq": 7, "frames": frames})
        ack = await recv_op(ws, "ack")
        assert ack["seq"] == 7
        assert ack["accepted"] == 2
        assert [(r["index"], r["field"]) for r in ack["rejected"]] == [(1, "hr"), (3, "bogus")]
        assert all(r["reason"] for r in ack["rejected"])
        rows = await stored(live_server, "alice", t0, t0 + 10)
        assert [f.ts for f in rows] == [t0, t0 + 2]
    finally:
        await ws.close()


async def test_resent_frames_are_idempotent(live_server: LiveServer) -> None:
    ws = await live_server.connect("alice")
    try:
        t0 = now_ms() - 10_000
        frames = [frame(t0 + i, hr=60 + i) for i in range(3)]
        for seq in (1, 1, 2):
            await send(ws, {"op": "frames", "seq": seq, "frames": frames})
            assert (await recv_op(ws, "ack"))["accepted"] == 3
        rows = await stored(live_server, "alice", t0, t0 + 10)
        assert [(f.ts, f.hr) for f in rows] == [(t0 + i, 60.0 + i) for i in range(3)]
    finally:
        await ws.close()


# -- errors and limits ---------------------------------------------------------------------


async def test_malformed_json_and_unknown_op_answer_errors_and_keep_the_connection(
    live_server: LiveServer,
) -> None:
    ws = await live_server.connect("alice")
    try:
        await ws.send("{not json")
        error = await recv(ws)
        assert (error["op"], error["code"]) == ("error", "bad_json")
        await send(ws, {"op": "dance"})
        error = await recv(ws)
        assert (error["op"], error["code"]) == ("error", "unknown_op")
        await send(ws, {"op": "ping", "t": 1})
        assert (await recv(ws))["op"] == "pong"
    finally:
        await ws.close()


async def test_too_many_errors_close_with_1008(live_server: LiveServer) -> None:
    ws = await live_server.connect("alice")
    try:
        for _ in range(MAX_ERRORS):
            await ws.send("nope")
            assert (await recv(ws))["code"] == "bad_json"
        await ws.send("nope")
        assert (await recv(ws))["code"] == "bad_json"
        assert await close_code(ws) == 1008
    finally:
        await ws.close()


async def test_a_message_over_64_kib_closes_with_1009(live_server: LiveServer) -> None:
    ws = await live_server.connect("alice")
    try:
        await ws.send(orjson.dumps({"op": "ping", "pad": "x" * MAX_MESSAGE_BYTES}).decode())
        assert await close_code(ws) == 1009
    finally:
        await ws.close()


async def test_rate_limit_closes_with_1008(settings_with: Callable[..., Settings]) -> None:
    async with start_server(settings_with(rate_per_s=0.5, rate_burst=3)) as live:
        ws = await live.connect("alice", hello=False)
        try:
            for i in range(3):
                await send(ws, {"op": "ping", "t": i})
                assert (await recv(ws))["op"] == "pong"
            await send(ws, {"op": "ping", "t": 3})
            error = await recv(ws)
            assert (error["op"], error["code"]) == ("error", "rate_limited")
            assert await close_code(ws) == 1008
        finally:
            await ws.close()


async def test_ping_answers_pong(live_server: LiveServer) -> None:
    ws = await live_server.connect("alice")
    try:
        before = time.time() * 1000
        await send(ws, {"op": "ping", "t": 123.5})
        pong = await recv(ws)
        assert pong["op"] == "pong"
        assert pong["t"] == 123.5
        assert before <= pong["server_t"] <= time.time() * 1000
    finally:
        await ws.close()


# -- subscribe ---------------------------------------------------------------------------


async def test_a_phone_may_not_subscribe_to_another_user(live_server: LiveServer) -> None:
    ws = await live_server.connect("alice")
    try:
        await send(ws, {"op": "subscribe", "user_id": "bob"})
        error = await recv(ws)
        assert (error["op"], error["code"]) == ("error", "forbidden")
        assert await close_code(ws) == 4003
    finally:
        await ws.close()


async def test_a_service_token_may_subscribe_to_any_user(live_server: LiveServer) -> None:
    async with live_server.http() as client:
        await commit(client, "bob", mood="tired")
        ws = await live_server.connect("ops", "service", hello=False)
        try:
            await send(ws, {"op": "subscribe", "user_id": "bob"})
            snapshot = await recv_op(ws, "snapshot")
            assert (snapshot["user_id"], snapshot["mood"]) == ("bob", "tired")
            body = await commit(client, "bob", mood="happy")
            delta = await recv_op(ws, "delta")
            assert delta["user_id"] == "bob"
            assert delta["version"] == body["version"]
            assert delta["changes"]["mood"] == "happy"
        finally:
            await ws.close()


async def test_a_frame_with_only_an_empty_env_is_rejected(live_server: LiveServer) -> None:
    ws = await live_server.connect("alice")
    try:
        t0 = now_ms() - 10_000
        frames = [{"ts": t0, "env": {}}, {"ts": t0 + 1, "hr": 61, "env": {}}]
        await send(ws, {"op": "frames", "seq": 3, "frames": frames})
        ack = await recv_op(ws, "ack")
        assert ack["accepted"] == 1
        assert [(r["index"], r["field"]) for r in ack["rejected"]] == [(0, "frame")]
        rows = await stored(live_server, "alice", t0, t0 + 10)
        assert [(f.ts, f.env) for f in rows] == [(t0 + 1, None)]
    finally:
        await ws.close()


async def test_hello_during_a_store_outage_answers_unavailable_and_the_socket_recovers(
    settings: Settings,
) -> None:
    store = SQLiteStore(settings.sqlite_path)
    async with start_server(settings, store=store) as live:
        ws = await live.connect("alice", hello=False)
        try:
            await store.close()  # the outage: every read raises StoreError
            await send(ws, {"op": "hello", "client": "test"})
            answer = await recv(ws)
            assert (answer["op"], answer["code"]) == ("error", "unavailable")
            await send(ws, {"op": "ping", "t": 1})
            assert (await recv(ws))["op"] == "pong"  # still open
            await store.open()  # the store is back
            await send(ws, {"op": "hello", "client": "test"})
            assert (await recv(ws))["op"] == "snapshot"
        finally:
            await ws.close()
