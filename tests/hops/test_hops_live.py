"""Acks across hops and commands on a live server (real sockets), on SQLite and DynamoDB
Local: ``seen`` and the devices route, the REST watch's ETag, commands with the delta and
again on ``hello``, one outcome per command, expiry, and the behind gauge."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import websockets

from server.hops.commands import KINDS, LONGEST_TTL_MS
from tests.conftest import LiveServer, auth, recv, recv_op, send, token
from tests.hops.conftest import Clock, commands_of, devices_of
from tests.server.conftest import commit, errors_in


async def wait_for_device(
    live: LiveServer, user: str, device: str, version: int, within: float = 5.0
) -> dict[str, Any]:
    """Poll the devices route until ``device`` shows ``version``; its entry."""
    async with live.http() as client, asyncio.timeout(within):
        while True:
            body = await devices_of(client, user)
            found = [d for d in body["devices"] if d["device"] == device]
            if found and found[0]["seen_version"] == version:
                return found[0]
            await asyncio.sleep(0.02)  # polling a condition under a deadline


async def test_seen_from_a_socket_shows_in_the_devices_route_with_how_far_behind(
    hops_server: LiveServer,
) -> None:
    async with hops_server.http() as client:
        for mood in ("happy", "anxious", "tired"):
            await commit(client, "alice", mood=mood)
        ws = await hops_server.connect("alice")
        await send(ws, {"op": "seen", "device": "phone", "version": 3})
        await send(ws, {"op": "seen", "device": "watch-1", "kind": "watch", "version": 1})
        watch = await wait_for_device(hops_server, "alice", "watch-1", 1)
        body = await devices_of(client, "alice")
        await ws.close()
    assert body["version"] == 3
    assert watch["kind"] == "watch" and watch["behind"] == 2
    phone = next(d for d in body["devices"] if d["device"] == "phone")
    assert phone["kind"] == "phone" and phone["behind"] == 0 and phone["seen_at"] > 0


async def test_the_behind_gauge_counts_devices_more_than_one_version_behind(
    hops_server: LiveServer,
) -> None:
    async with hops_server.http() as client:
        for mood in ("happy", "anxious", "tired"):
            await commit(client, "alice", mood=mood)
        ws = await hops_server.connect("alice")
        await send(ws, {"op": "seen", "device": "w-old", "kind": "watch", "version": 1})
        await send(ws, {"op": "seen", "device": "w-close", "kind": "watch", "version": 2})
        await send(ws, {"op": "seen", "device": "phone", "version": 3})
        await wait_for_device(hops_server, "alice", "phone", 3)
        text = (await client.get("/metrics")).text
        await send(ws, {"op": "seen", "device": "w-old", "kind": "watch", "version": 3})
        await wait_for_device(hops_server, "alice", "w-old", 3)
        after = (await client.get("/metrics")).text
        await ws.close()
    assert 'companion_devices_behind{kind="watch"} 1.0' in text
    assert 'companion_devices_behind{kind="watch"} 0.0' in after


async def test_a_rest_watch_is_seen_at_the_version_its_etag_names(hops_server: LiveServer) -> None:
    async with hops_server.http() as client:
        await commit(client, "alice", mood="happy")
        headers = auth("alice", "watch")
        first = await client.get("/v1/users/alice/state", headers=headers)
        etag = first.headers["etag"]
        assert "watch" not in [d["device"] for d in (await devices_of(client, "alice"))["devices"]]
        again = await client.get(
            "/v1/users/alice/state", headers={**headers, "If-None-Match": etag}
        )
        assert again.status_code == 304
        watch = await wait_for_device(hops_server, "alice", "watch", first.json()["version"])
        await commit(client, "alice", mood="tired")
        named = await client.get(
            "/v1/users/alice/state?device=wrist-2", headers={**headers, "If-None-Match": etag}
        )
        assert named.status_code == 200  # an old ETag: the watch is behind, nothing recorded
        devices = (await devices_of(client, "alice"))["devices"]
    assert watch["kind"] == "watch"
    assert [d["device"] for d in devices] == ["watch"]
    assert devices[0]["behind"] == 1


async def test_commands_follow_the_delta_that_issued_them_and_one_answer_counts(
    hops_server: LiveServer,
) -> None:
    ws = await hops_server.connect("alice")
    async with hops_server.http() as client:
        body = await commit(client, "alice", actions=["breathing_session", "hydrate"])
        delta = await recv_op(ws, "delta")
        commands = (await recv_op(ws, "commands"))["commands"]
        assert [c["kind"] for c in commands] == ["breathing_session", "hydrate"]
        assert all(c["version"] == delta["version"] == body["version"] for c in commands)
        breathing = commands[0]
        assert breathing["params"] == KINDS["breathing_session"].params
        assert breathing["expires_at"] - breathing["issued_at"] == 15 * 60 * 1000
        await send(ws, {"op": "command_result", "id": breathing["id"], "outcome": "done"})
        first = await recv_op(ws, "command_ack")
        await send(ws, {"op": "command_result", "id": breathing["id"], "outcome": "dismissed"})
        second = await recv_op(ws, "command_ack")
        listed = {c["id"]: c for c in await commands_of(client, "alice")}
    await ws.close()
    assert first == {"op": "command_ack", "id": breathing["id"], "outcome": "done"}
    assert second["outcome"] == "done"  # applied once
    assert listed[breathing["id"]]["outcome"] == "done"
    assert listed[breathing["id"]]["device"] == "phone"
    assert listed[commands[1]["id"]]["outcome"] == "pending"


async def test_a_hello_gets_the_snapshot_and_every_pending_command_again(
    hops_server: LiveServer,
) -> None:
    async with hops_server.http() as client:
        await commit(client, "alice", actions=["rest"])
        await commit(client, "alice", mood="tired", actions=["move", "hydrate"])
    ws = await hops_server.connect("alice", hello=False)
    await send(ws, {"op": "hello", "client": "test", "since": 1})
    snapshot = await recv_op(ws, "snapshot")
    pending = (await recv_op(ws, "commands"))["commands"]
    assert snapshot["version"] == 2 and snapshot["actions"] == ["move", "hydrate"]
    assert sorted(c["kind"] for c in pending) == ["hydrate", "move", "rest"]
    move = next(c for c in pending if c["kind"] == "move")
    await send(ws, {"op": "command_result", "id": move["id"], "outcome": "dismissed"})
    await recv_op(ws, "command_ack")
    await send(ws, {"op": "hello", "client": "test", "since": 2})
    assert (await recv_op(ws, "uptodate"))["version"] == 2
    again = (await recv_op(ws, "commands"))["commands"]
    await ws.close()
    assert sorted(c["kind"] for c in again) == ["hydrate", "rest"]


async def test_a_command_nobody_answers_expires_and_a_late_answer_is_expired(
    hops_server: LiveServer, clock: Clock
) -> None:
    async with hops_server.http() as client:
        await commit(client, "alice", actions=["keep_going", "wind_down"])
        commands = await commands_of(client, "alice")
        keep_going = next(c for c in commands if c["kind"] == "keep_going")
        wind_down = next(c for c in commands if c["kind"] == "wind_down")
        clock.offset = (keep_going["expires_at"] - keep_going["issued_at"]) / 1000 + 1
        listed = {c["id"]: c for c in await commands_of(client, "alice")}
        ws = await hops_server.connect("alice", hello=False)
        await send(ws, {"op": "hello", "client": "test"})
        await recv_op(ws, "snapshot")
        pending = (await recv_op(ws, "commands"))["commands"]
        clock.offset = (wind_down["expires_at"] - wind_down["issued_at"]) / 1000 + 1
        await send(ws, {"op": "command_result", "id": wind_down["id"], "outcome": "done"})
        late = await recv_op(ws, "command_ack")
    await ws.close()
    assert listed[keep_going["id"]]["outcome"] == "expired"
    assert "device" not in listed[keep_going["id"]]
    assert [c["kind"] for c in pending] == ["wind_down"]
    assert late["outcome"] == "expired"


async def test_hostile_seen_and_results_get_errors_never_an_error_log(
    hops_server: LiveServer, server_log: list[logging.LogRecord]
) -> None:
    ws = await hops_server.connect("alice")
    bad: list[dict[str, Any]] = [
        {"op": "seen", "device": "<script>", "version": 1},
        {"op": "seen", "device": "w", "version": 2**62},
        {"op": "command_result", "id": "c" + "0" * 20, "outcome": "done"},  # no such command
        {"op": "command_result", "id": "c" + "0" * 20, "outcome": "exploded"},
    ]
    codes = []
    for message in bad:
        await send(ws, message)
        codes.append((await recv_op(ws, "error"))["code"])
    await ws.send('{"op": "seen", "device": "w", "version": 1180591620717411303424}')
    codes.append((await recv_op(ws, "error"))["code"])
    for n in range(17):  # one more device name than a user may have
        await send(ws, {"op": "seen", "device": f"d{n}", "kind": "watch", "version": 0})
    too_many = await recv_op(ws, "error")
    await ws.close()
    assert codes == ["bad_message"] * 5
    assert "too many devices" in too_many["message"]
    assert errors_in(server_log) == []
    assert not any("<script>" in r.getMessage() for r in server_log)


async def test_devices_and_commands_of_another_user_are_forbidden(hops_server: LiveServer) -> None:
    async with hops_server.http() as client:
        for path in ("devices", "commands"):
            response = await client.get(f"/v1/users/bob/{path}", headers=auth("alice"))
            assert response.status_code == 403
            assert (await client.get(f"/v1/users/bob/{path}")).status_code == 401


async def test_the_export_holds_the_users_devices_and_commands(hops_server: LiveServer) -> None:
    ws = await hops_server.connect("alice")
    async with hops_server.http() as client:
        await commit(client, "alice", actions=["rest"])
        await send(ws, {"op": "seen", "device": "phone", "version": 1})
        async with asyncio.timeout(5):
            while True:  # the report is written behind: poll the store's view under a deadline
                exported = (
                    await client.get("/v1/users/alice/export", headers=auth("alice"))
                ).json()
                if exported["devices"]:
                    break
                await asyncio.sleep(0.02)
        await ws.close()
        await client.delete("/v1/users/alice", headers=auth("alice"))
        after = (await client.get("/v1/users/alice/export", headers=auth("alice"))).json()
    assert [d["device"] for d in exported["devices"]] == ["phone"]
    assert [c["kind"] for c in exported["commands"]] == ["rest"]
    assert after["devices"] == [] and after["commands"] == []


async def test_a_hello_long_after_the_last_commit_gets_no_commands(
    hops_server: LiveServer, clock: Clock
) -> None:
    async with hops_server.http() as client:
        await commit(client, "alice", actions=["wind_down"])
    clock.offset = LONGEST_TTL_MS / 1000 + 1
    lasting = {"Authorization": f"Bearer {token('alice', ttl=24 * 3600)}"}
    ws = await websockets.connect(hops_server.ws_url, additional_headers=lasting)
    await send(ws, {"op": "hello", "client": "test"})
    await recv_op(ws, "snapshot")
    await send(ws, {"op": "ping", "t": 1})
    after = await recv(ws)  # the pong: no commands message came between
    await ws.close()
    async with hops_server.http() as client:
        (command,) = await commands_of(client, "alice")
    assert after["op"] == "pong"
    assert command["outcome"] == "expired"
