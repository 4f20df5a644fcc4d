"""The load generator's lean HTTP/1.1 pool, against the real server and a rude one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest

from clients.load.httppool import HTTPPool
from tests.conftest import LiveServer, auth

STATE = b'{"state":"calm","mood":"content","force":true}'


def service_pool(live: LiveServer, size: int) -> HTTPPool:
    headers = {**auth("alice", "service"), "Content-Type": "application/json"}
    return HTTPPool(live.url, size=size, headers=headers)


async def test_a_post_returns_status_and_body_and_reuses_its_connection(
    live_server: LiveServer,
) -> None:
    pool = service_pool(live_server, size=4)
    try:
        versions = []
        for _ in range(5):
            response = await pool.request("POST", "/v1/demo/users/alice/state", STATE)
            assert response.status == 200
            versions.append(orjson.loads(response.body)["version"])
        assert versions == [1, 2, 3, 4, 5]
        assert pool.opened == 1
        missing = await pool.request("GET", "/v1/no-such-route")
        assert missing.status == 404
    finally:
        await pool.close()


async def test_concurrent_requests_share_at_most_size_connections(
    live_server: LiveServer,
) -> None:
    pool = service_pool(live_server, size=3)
    try:
        responses = await asyncio.gather(
            *(pool.request("POST", f"/v1/demo/users/u{i}/state", STATE) for i in range(30))
        )
        assert [r.status for r in responses] == [200] * 30
        assert 1 <= pool.opened <= 3
    finally:
        await pool.close()


class RudeServer:
    """Answers each request with ``Connection: close``; closes without answering a body of
    ``hang up``. Counts the connections it accepted."""

    def __init__(self) -> None:
        self.connections = 0
        self.url = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        body = await reader.readexactly(length)
        if body != b"hang up":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            await writer.drain()
        writer.close()
        await writer.wait_closed()


@pytest.fixture
async def rude_server() -> AsyncIterator[RudeServer]:
    rude = RudeServer()
    server = await asyncio.start_server(rude.handle, "127.0.0.1", 0)
    rude.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield rude
    finally:
        server.close()
        await server.wait_closed()


async def test_a_connection_the_server_closes_is_replaced(rude_server: RudeServer) -> None:
    pool = HTTPPool(rude_server.url, size=1)
    try:
        for _ in range(3):
            response = await pool.request("POST", "/x", b"hello")
            assert response == (200, b"ok")
        assert pool.opened == rude_server.connections == 3
    finally:
        await pool.close()


async def test_a_server_that_hangs_up_mid_request_raises_and_the_pool_recovers(
    rude_server: RudeServer,
) -> None:
    pool = HTTPPool(rude_server.url, size=1)
    try:
        with pytest.raises(ConnectionError):
            await pool.request("POST", "/x", b"hang up")
        response = await pool.request("POST", "/x", b"hello")
        assert response.status == 200
    finally:
        await pool.close()


async def test_a_silent_server_times_out_and_the_connection_is_dropped() -> None:
    accepted = asyncio.Event()
    dropped = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()
        await reader.read()  # never answers; returns when the client closes
        writer.close()
        await writer.wait_closed()
        dropped.set()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = HTTPPool(f"http://127.0.0.1:{port}", size=1, request_timeout=0.2)
    try:
        with pytest.raises(TimeoutError):
            await pool.request("GET", "/")
        assert accepted.is_set()
        async with asyncio.timeout(5):
            await dropped.wait()  # the half-used connection was closed, not kept
    finally:
        await pool.close()
        server.close()
        await server.wait_closed()


def test_only_plain_http_is_spoken() -> None:
    with pytest.raises(ValueError, match="plain http"):
        HTTPPool("https://127.0.0.1:8443")
