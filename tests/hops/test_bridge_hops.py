"""The bridge's side of acks across hops against a scripted WebSocket server on loopback,
with a real simulated watch behind a real TCP watch link: the watch's answer to a command is
sent again after a reconnect until the server acks it, and the watch's ``seen`` too."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.server import ServerConnection, serve

from clients.bridge.bridge import Bridge
from clients.bridge.journal import Journal
from clients.bridge.watchlink import TcpWatchLink
from clients.connect.access import endpoints
from clients.watch.sim import SimulatedWatch
from server.hops.commands import command_id

COMMAND = {"id": command_id("alice", 1, "rest"), "kind": "rest", "params": {"minutes": 20},
           "version": 1, "issued_at": 1, "expires_at": 2**50, "outcome": "pending"}  # fmt: skip
SNAPSHOT = {"op": "snapshot", "user_id": "alice", "version": 1, "state_hash": "h1",
            "state": "calm", "mood": "content", "energy": 70, "image_url": None,
            "avatar_status": "none", "reasoning": "", "actions": ["rest"], "source": "rules",
            "updated_at": 1}  # fmt: skip


class NoFrames:
    async def chunks(self, cursor: Any) -> AsyncIterator[tuple[list[dict[str, Any]], Any]]:
        return
        yield


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[str, asyncio.Queue[ServerConnection]]]:
    """A loopback server that hands each accepted connection to the test."""
    connections: asyncio.Queue[ServerConnection] = asyncio.Queue()

    async def handler(ws: ServerConnection) -> None:
        connections.put_nowait(ws)
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"http://127.0.0.1:{port}", connections


async def recv(ws: ServerConnection, op: str) -> dict[str, Any]:
    async with asyncio.timeout(5):
        while True:
            message: dict[str, Any] = orjson.loads(await ws.recv())
            if message["op"] == op:
                return message


async def take(ws: ServerConnection, count: int) -> dict[str, dict[str, Any]]:
    """The next ``count`` seen and command_result messages, by op (and device for seen)."""
    found: dict[str, dict[str, Any]] = {}
    async with asyncio.timeout(5):
        while len(found) < count:
            message: dict[str, Any] = orjson.loads(await ws.recv())
            if message["op"] == "seen":
                found[f"seen:{message['device']}"] = message
            elif message["op"] == "command_result":
                found["command_result"] = message
    return found


async def send(ws: ServerConnection, message: dict[str, Any]) -> None:
    await ws.send(orjson.dumps(message).decode())


async def test_the_watchs_answer_is_sent_again_after_a_reconnect_until_acked(
    scripted: tuple[str, asyncio.Queue[ServerConnection]], tmp_path: Path
) -> None:
    url, connections = scripted
    watch = SimulatedWatch(None, out=lambda line: None, answer="dismissed", answer_after=0.0)
    watch_server = await asyncio.start_server(watch.serve_link, "127.0.0.1", 0)
    journal = Journal(tmp_path / "j")
    journal.open()

    async def no_sleep(seconds: float) -> None:
        await asyncio.sleep(0)

    bridge = Bridge(
        endpoints(url), "t.o.k", NoFrames(), journal,
        link=TcpWatchLink("127.0.0.1", watch_server.sockets[0].getsockname()[1]),
        sleep=no_sleep, rand=lambda: 0.5, watch_device="wrist",
    )  # fmt: skip
    run = asyncio.create_task(bridge.run())
    try:
        ws = await connections.get()
        await recv(ws, "hello")
        await send(ws, SNAPSHOT)
        await send(ws, {"op": "commands", "user_id": "alice", "commands": [COMMAND]})
        first = await take(ws, 3)  # in whatever order the phone and the watch get there
        phone_seen, watch_seen = first["seen:phone"], first["seen:wrist"]
        result = first["command_result"]
        await ws.close(1012, "restarting")  # no command_ack: the answer died with the server

        ws = await connections.get()
        await recv(ws, "hello")
        second = await take(ws, 3)
        resent = second["command_result"]
        await send(ws, {"op": "command_ack", "id": COMMAND["id"], "outcome": "dismissed"})
        async with asyncio.timeout(5):
            while True:
                if bridge.stats["command_results_acked"] == 1:
                    break
                await asyncio.sleep(0.01)  # polling a condition under a deadline
    finally:
        bridge.stop()
        await asyncio.wait_for(run, 10)
        journal.close()
        watch_server.close()
        await watch_server.wait_closed()
        await watch.close()
    assert phone_seen == {"op": "seen", "device": "phone", "kind": "phone", "version": 1}
    assert watch_seen == {"op": "seen", "device": "wrist", "kind": "watch", "version": 1}
    assert result == {"op": "command_result", "id": COMMAND["id"], "outcome": "dismissed",
                      "device": "wrist"}  # fmt: skip
    assert resent == result
    assert second["seen:phone"] == phone_seen and second["seen:wrist"] == watch_seen
    assert watch.answers == {COMMAND["id"]: "dismissed"}
    assert bridge._results == {}
