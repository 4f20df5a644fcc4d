"""The push fast path: frames built once by the hub, written straight to sockets."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import orjson
import pytest
import uvloop
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.streams import StreamReader

from server.protocol import text_frame
from server.push.endpoint import Connection
from server.push.transport import SEND_BUFFER_BYTES, EdgeProtocol
from tests.conftest import LiveServer, recv_op, token
from tests.server.conftest import commit


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65_535, 65_536, 200_000])
def test_text_frame_is_the_frame_websockets_would_send(size: int) -> None:
    payload = ("é" * size).encode()[:size]
    expected = Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])
    assert text_frame(payload) == expected


def test_text_frame_parses_back_to_the_payload() -> None:
    payload = b'{"op":"delta","user_id":"alice"}' * 5
    reader = StreamReader()
    reader.feed_data(text_frame(payload))
    parser = Frame.parse(reader.read_exact, mask=False)
    with pytest.raises(StopIteration) as done:
        next(parser)
    frame = done.value.value
    assert frame.opcode is Opcode.TEXT
    assert frame.fin
    assert frame.data == payload


def connection_of(live: LiveServer, user: str) -> Connection:
    (peer,) = live.services.hub.peers(user)
    assert isinstance(peer, Connection)
    return peer


@asynccontextmanager
async def subscribed_watch(
    live: LiveServer,
) -> AsyncIterator[tuple[ClientConnection, httpx.AsyncClient]]:
    """A watch of alice that has had its first delta (joined, idle again), and a client."""
    ws = await live.connect("alice", "watch")
    try:
        async with live.http() as client:
            await commit(client, "alice", mood="happy")
            await recv_op(ws, "delta")
            yield ws, client
    finally:
        await ws.close()


async def test_server_tests_run_on_uvloop() -> None:
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)


async def test_a_delta_to_an_idle_socket_is_written_without_outbox_or_task(
    live_server: LiveServer,
) -> None:
    async with subscribed_watch(live_server) as (ws, client):
        connection = connection_of(live_server, "alice")
        for energy in (10, 20, 30):
            body = await commit(client, "alice", energy=energy)
            delta = await recv_op(ws, "delta")
            assert delta["version"] == body["version"]
            assert delta["changes"] == {"energy": energy}
            assert connection._writer is None
            assert connection._outbox is None


async def test_an_accepted_connection_keeps_no_handshake_request(
    live_server: LiveServer,
) -> None:
    async with subscribed_watch(live_server):
        connection = connection_of(live_server, "alice")
        parser = connection._ws.parser
        assert parser.gi_frame is not None
        suspended = parser.gi_frame.f_locals.values()
        assert not any(isinstance(value, Request) for value in suspended)


async def test_accepted_sockets_have_a_bounded_send_buffer(live_server: LiveServer) -> None:
    async with subscribed_watch(live_server):
        connection = connection_of(live_server, "alice")
        sock = connection._transport.get_extra_info("socket")
        size = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        assert SEND_BUFFER_BYTES <= size <= 2 * SEND_BUFFER_BYTES  # Linux reports it doubled


@pytest.mark.parametrize("path", ["/v1/ws", "/socket"])
async def test_device_sockets_are_served_by_our_connection_not_uvicorns(
    live_server: LiveServer, path: str
) -> None:
    """EdgeProtocol answers device upgrades itself; uvicorn's WebSocket protocol (its ``ws``
    setting) only upgrades the app's own routes (the operator's fleet feed)."""
    assert live_server.server.config.http_protocol_class is EdgeProtocol
    url = live_server.ws_url.replace("/v1/ws", path) + f"?token={token('alice', 'watch')}"
    async with websockets.connect(url) as ws:
        await ws.send(orjson.dumps({"op": "hello", "client": "t"}).decode())
        await recv_op(ws, "snapshot")
        connection_of(live_server, "alice")  # asserts the peer is our Connection


async def test_the_handshake_and_the_connection_share_one_websockets_protocol(
    live_server: LiveServer,
) -> None:
    """The request is made from what httptools read and answered by the protocol that then
    serves the connection: what ``accept`` learnt (the Origin) is the connection's."""
    origin = live_server.url
    ws = await live_server.connect("alice", "watch", origin=origin)
    try:
        connection = connection_of(live_server, "alice")
        assert connection._ws.origin == origin
    finally:
        await ws.close()


async def _answer_to(live: LiveServer, request: bytes) -> bytes:
    host, port = live.url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        async with asyncio.timeout(5):
            return await reader.read()  # the server answers, then closes
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("method", "extra"),
    [("POST", ""), ("GET", "Content-Length: 5\r\n"), ("GET", "Transfer-Encoding: chunked\r\n")],
)
async def test_an_upgrade_that_is_not_a_bodiless_get_is_answered_400(
    live_server: LiveServer, method: str, extra: str
) -> None:
    host = live_server.url.removeprefix("http://")
    request = (
        f"{method} /v1/ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Sec-WebSocket-Version: 13\r\n{extra}"
        f"Authorization: Bearer {token('alice', 'watch')}\r\n\r\n"
    ).encode()
    answer = await _answer_to(live_server, request)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:40]


@pytest.mark.parametrize(
    "field",
    [
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ\xff=",
        b"Sec-WebSocket-Key: \xff\xfe",
        b"Origin: http://\xe9.example",
    ],
)
async def test_an_upgrade_with_bytes_websockets_refuses_is_answered_400_without_an_error(
    live_server: LiveServer, field: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    host = live_server.url.removeprefix("http://").encode()
    lines = [
        b"GET /v1/ws HTTP/1.1",
        b"Host: " + host,
        b"Upgrade: websocket",
        b"Connection: Upgrade",
        b"Sec-WebSocket-Version: 13",
        b"Authorization: Bearer " + token("alice", "watch").encode(),
        field,
    ]
    if not field.startswith(b"Sec-WebSocket-Key"):
        lines.append(b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==")
    answer = await _answer_to(live_server, b"\r\n".join(lines) + b"\r\n\r\n")
    assert answer.startswith((b"HTTP/1.1 400", b"HTTP/1.1 403")), answer[:40]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
