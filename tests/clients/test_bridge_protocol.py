"""The bridge's side of the protocol against a scripted WebSocket server on loopback.

The server here is a plain ``websockets`` server whose every move the test makes (what it
sends, when it closes, with which code), so the cases a real server produces only under
rare timing (a missed delta, a restart mid-batch) are driven deterministically. Sleeps
and randomness are injected: reconnect pauses are recorded, not slept.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.server import ServerConnection, serve

from clients.bridge.bridge import EXIT_AUTH, Bridge
from clients.bridge.journal import Journal
from clients.connect.access import endpoints

FRAMES = [{"ts": 1_700_000_000_000 + i * 1000, "hr": 70.0 + i, "device": "w"} for i in range(3)]


class ListSource:
    async def chunks(self, cursor: Any) -> AsyncIterator[tuple[list[dict[str, Any]], Any]]:
        if cursor is None:
            yield list(FRAMES), {"done": True}


class RecordingLink:
    def __init__(self) -> None:
        self.views: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def send_state(self, view: Mapping[str, Any]) -> None:
        self.views.put_nowait(dict(view))

    async def close(self) -> None:
        return None


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


async def send(ws: ServerConnection, message: dict[str, Any]) -> None:
    await ws.send(orjson.dumps(message).decode())


def snapshot(version: int, mood: str) -> dict[str, Any]:
    return {"op": "snapshot", "user_id": "alice", "version": version, "state_hash": f"h{version}",
            "state": "calm", "mood": mood, "energy": 70, "image_url": "/media/a.png",
            "avatar_status": "ready", "reasoning": "", "actions": [], "source": "rules",
            "updated_at": 1}  # fmt: skip


def make_bridge(url: str, tmp_path: Path, link: RecordingLink, pauses: list[float]) -> Bridge:
    async def no_sleep(seconds: float) -> None:
        pauses.append(seconds)
        await asyncio.sleep(0)

    journal = Journal(tmp_path / "j")
    journal.open()
    return Bridge(
        endpoints(url), "t.o.k", ListSource(), journal, link=link,
        sleep=no_sleep, rand=lambda: 0.5, batch_size=10,
    )  # fmt: skip


async def test_a_delta_on_another_base_makes_the_bridge_ask_for_a_snapshot(
    scripted: tuple[str, asyncio.Queue[ServerConnection]], tmp_path: Path
) -> None:
    url, connections = scripted
    link = RecordingLink()
    bridge = make_bridge(url, tmp_path, link, [])
    run = asyncio.create_task(bridge.run())
    ws = await connections.get()
    assert "since" not in await recv(ws, "hello")
    await send(ws, snapshot(1, "content"))
    assert (await link.views.get())["image_url"] == f"{url}/media/a.png"  # made absolute
    delta = {"op": "delta", "user_id": "alice", "version": 2, "base": 1, "state_hash": "h2",
             "changes": {"mood": "anxious"}, "t": 5.0}  # fmt: skip
    await send(ws, delta)
    assert (await link.views.get())["mood"] == "anxious"
    await send(ws, {**delta, "version": 4, "base": 3, "state_hash": "h4"})  # v3 was missed
    assert (await recv(ws, "hello"))["since"] == 2
    await send(ws, snapshot(4, "happy"))
    view = await link.views.get()
    assert (view["version"], view["mood"]) == (4, "happy")
    assert bridge.state.version == 4
    bridge.stop()
    assert await run == 0
    bridge.journal.close()


async def test_after_1012_the_bridge_returns_soon_and_resends_unacked_frames(
    scripted: tuple[str, asyncio.Queue[ServerConnection]], tmp_path: Path
) -> None:
    url, connections = scripted
    pauses: list[float] = []
    bridge = make_bridge(url, tmp_path, RecordingLink(), pauses)
    run = asyncio.create_task(bridge.run())
    ws = await connections.get()
    await recv(ws, "hello")
    first = await recv(ws, "frames")
    assert first["frames"] == FRAMES
    await ws.close(1012, "restarting")  # no ack: the batch died with the server

    ws = await connections.get()
    await recv(ws, "hello")
    again = await recv(ws, "frames")
    assert again["frames"] == FRAMES and again["seq"] != first["seq"]
    await send(ws, {"op": "ack", "seq": again["seq"], "accepted": 3, "rejected": []})
    await send(ws, {"op": "pong", "t": 0, "server_t": 0})  # the ack was handled before this
    await ws.close(4003, "forbidden")
    assert await asyncio.wait_for(run, 5) == EXIT_AUTH
    assert pauses == [0.5]  # rand() * 1 s after 1012, and no reconnect after 4003
    assert len(bridge.journal) == 0
    bridge.journal.close()


async def test_a_batch_the_server_could_not_store_is_sent_again(
    scripted: tuple[str, asyncio.Queue[ServerConnection]], tmp_path: Path
) -> None:
    url, connections = scripted
    bridge = make_bridge(url, tmp_path, RecordingLink(), [])
    run = asyncio.create_task(bridge.run())
    ws = await connections.get()
    await recv(ws, "hello")
    first = await recv(ws, "frames")
    error = f"batch {first['seq']} not stored; resend"
    await send(ws, {"op": "error", "code": "internal", "message": error})
    again = await recv(ws, "frames")
    assert again["frames"] == FRAMES
    assert len(bridge.journal) == 3
    bridge.stop()
    await run
    bridge.journal.close()
