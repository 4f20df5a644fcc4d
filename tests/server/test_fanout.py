"""Fan-out of committed changes to every connection of a user, and slow peers."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from itertools import pairwise
from typing import Any

import orjson
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from server.settings import Settings
from tests.conftest import LiveServer, auth, recv, recv_op, start_server
from tests.server.conftest import commit


class RawPeer:
    """A WebSocket client on a socket with a tiny receive buffer that reads only on demand."""

    def __init__(self, sock: socket.socket, protocol: ClientProtocol) -> None:
        self.sock = sock
        self.protocol = protocol
        self.frames: list[Frame] = []
        self.eof = False

    @classmethod
    async def open(cls, live: LiveServer, user: str, device: str = "phone") -> RawPeer:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        sock.setblocking(False)
        port = int(live.url.rsplit(":", 1)[1])
        await loop.sock_connect(sock, ("127.0.0.1", port))
        protocol = ClientProtocol(parse_uri(live.ws_url), max_size=None)
        request = protocol.connect()
        request.headers.update(auth(user, device))
        protocol.send_request(request)
        peer = cls(sock, protocol)
        await peer._flush()
        async with asyncio.timeout(5):
            while not any(isinstance(e, Response) for e in peer._read_events()):
                data = await loop.sock_recv(sock, 4096)
                assert data, "server closed during the handshake"
                protocol.receive_data(data)
        assert protocol.handshake_exc is None
        return peer

    def _read_events(self) -> list[Any]:
        events = self.protocol.events_received()
        self.frames.extend(e for e in events if isinstance(e, Frame))
        return events

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        for chunk in self.protocol.data_to_send():
            if chunk:
                await loop.sock_sendall(self.sock, chunk)

    async def send(self, message: dict[str, Any]) -> None:
        self.protocol.send_text(orjson.dumps(message))
        await self._flush()

    async def read_to_end(self, within: float = 10.0) -> None:
        """Read everything the server sent until it closes the TCP connection."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(within):
            while True:
                data = await loop.sock_recv(self.sock, 65536)
                if not data:
                    self.protocol.receive_eof()
                    self.eof = True
                    self._read_events()
                    return
                self.protocol.receive_data(data)
                self._read_events()
                await self._flush()  # answer the server's close frame, if any

    async def read_until(self, version: int, within: float = 10.0) -> None:
        """Read until a delta of ``version`` (or newer) has arrived."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(within):
            while not any(m["op"] == "delta" and m["version"] >= version for m in self.messages()):
                data = await loop.sock_recv(self.sock, 65536)
                assert data, "the server closed the connection"
                self.protocol.receive_data(data)
                self._read_events()
                await self._flush()

    def messages(self) -> list[dict[str, Any]]:
        return [orjson.loads(f.data) for f in self.frames if f.opcode is Opcode.TEXT]

    def close(self) -> None:
        self.sock.close()


def counter(live: LiveServer, name: str, **labels: str) -> float:
    value = live.services.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else float(value)


async def test_a_change_reaches_every_connection_of_the_user_and_no_other(
    live_server: LiveServer,
) -> None:
    phone = await live_server.connect("alice", "phone")
    watch = await live_server.connect("alice", "watch")
    debug = await live_server.connect("alice", "debug")
    other = await live_server.connect("bob", "phone")
    try:
        async with live_server.http() as client:
            body = await commit(client, "alice", mood="happy", energy=90)
            for ws in (phone, watch, debug):
                delta = await recv_op(ws, "delta")
                assert delta["user_id"] == "alice"
                assert delta["version"] == body["version"]
                assert delta["changes"]["mood"] == "happy"
            bob = await commit(client, "bob", mood="tired")
            first = await recv(other)
            assert first["op"] == "delta"
            assert first["user_id"] == "bob"
            assert first["version"] == bob["version"]
            assert first["changes"]["mood"] == "tired"
    finally:
        for ws in (phone, watch, debug, other):
            await ws.close()


async def test_a_delta_carries_base_version_hash_changes_and_commit_time(
    live_server: LiveServer,
) -> None:
    ws = await live_server.connect("alice")
    try:
        async with live_server.http() as client:
            await commit(client, "alice", mood="happy")
            await recv_op(ws, "delta")
            before = time.time() * 1000
            body = await commit(client, "alice", energy=12, reasoning="steady")
            delta = await recv_op(ws, "delta")
        assert set(delta) == {"op", "user_id", "version", "base", "state_hash", "changes", "t"}
        assert delta["version"] == body["version"] == 2
        assert delta["base"] == 1
        assert delta["state_hash"] == body["state_hash"]
        assert delta["changes"] == {"energy": 12, "reasoning": "steady"}
        assert before <= delta["t"] <= time.time() * 1000
    finally:
        await ws.close()


def reasoning(i: int) -> str:
    return f"{i:05d} " + "the heart rate is steady and the walk goes on. " * 8


def big_change(i: int) -> dict[str, Any]:
    """A ~33 KB change: the kernel buffers a few MB per socket, so a few hundred of these
    fill a peer that does not read."""
    return {
        "reasoning": reasoning(i),
        "energy": i % 100,
        "image_url": f"https://media.example/{i}/" + "x" * 32_000,
    }


async def commit_big(live: Any, user: str, **changes: Any) -> dict[str, Any]:
    """Commit through the state service itself: the demo route caps image_url at 2 KiB,
    and these tests need large messages to fill a socket's kernel buffers."""
    state = await live.services.state.update(user, lambda current: changes, cause="test")
    return {"version": state.version, "state_hash": state.state_hash}


async def test_a_peer_that_stops_reading_does_not_delay_the_others(
    settings_with: Callable[..., Settings],
) -> None:
    async with start_server(settings_with(write_timeout=0.5, outbox_limit=4)) as live:
        normal = await live.connect("alice", "watch")
        slow = await RawPeer.open(live, "alice", "phone")
        try:
            await slow.send({"op": "hello", "client": "slow"})
            worst = 0.0
            for i in range(1000):
                started = time.monotonic()
                body = await commit_big(live, "alice", **big_change(i))
                delta = await recv_op(normal, "delta", within=2.0)
                worst = max(worst, time.monotonic() - started)
                assert delta["version"] == body["version"]
                assert delta["base"] == body["version"] - 1
                if counter(live, "companion_slow_peer_closes_total") > 0:
                    break
            else:
                raise AssertionError("the slow peer was never closed")
            assert worst < 1.0
            await slow.read_to_end()
            assert slow.eof
            # The slow peer got far fewer versions than were committed: it was dropped.
            versions = [m["version"] for m in slow.messages() if m["op"] == "delta"]
            assert not versions or versions[-1] < body["version"]
            assert len(live.services.hub.peers("alice")) == 1
        finally:
            slow.close()
            await normal.close()


async def test_a_delta_coalesced_in_a_slow_outbox_spans_several_versions(
    settings_with: Callable[..., Settings],
) -> None:
    async with start_server(settings_with(write_timeout=30.0)) as live:
        slow = await RawPeer.open(live, "alice", "phone")
        try:
            await slow.send({"op": "hello", "client": "slow"})
            changed: dict[int, dict[str, Any]] = {}
            for i in range(1000):
                changes = big_change(i)
                if i % 3 == 0:
                    changes["mood"] = "happy" if i % 2 else "tired"
                body = await commit_big(live, "alice", **changes)
                changed[body["version"]] = changes
                merged = counter(live, "companion_outbox_drops_total", kind="coalesced")
                if merged >= 5:
                    break
            else:
                raise AssertionError("nothing coalesced")
            last = body["version"]
            # Reading again gets everything pending, merged.
            await slow.read_until(last)
            deltas = [m for m in slow.messages() if m["op"] == "delta"]
            assert deltas[-1]["version"] == last
            coalesced = [d for d in deltas if d["base"] < d["version"] - 1]
            assert coalesced
            for delta in coalesced:
                expected: dict[str, Any] = {}
                for version in range(delta["base"] + 1, delta["version"] + 1):
                    expected.update(changed.get(version, {}))
                expected.pop("source", None)
                if delta["base"] == 0:
                    expected["source"] = "manual"
                assert delta["changes"] == expected
            # No gaps: each delta starts where the previous one ended.
            for before, after in pairwise(deltas):
                assert after["base"] == before["version"]
        finally:
            slow.close()
