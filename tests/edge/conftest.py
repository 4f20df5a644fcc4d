"""A raw client for the hostile-client suite, a latency probe, and a log check.

:class:`Raw` speaks bytes on a loopback socket: it writes whatever a test builds (bad
framing, floods, half requests) and reads what the server answers, an HTTP response head
or WebSocket frames parsed by ``websockets``' sans-I/O client protocol. :func:`round_trip`
measures another client's ``ping``/``pong`` while the hostile one does its worst, and
:func:`assert_clean_log` checks what the server logged meanwhile.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager

import orjson
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import OPEN
from websockets.uri import parse_uri

from tests.conftest import LiveServer

PROBE_BOUND_S = 0.25
"""Another client's ping round trip while a hostile client attacks."""


def frame(opcode: Opcode, payload: bytes = b"", *, fin: bool = True, mask: bool = True) -> bytes:
    """One client frame as bytes (masked, as RFC 6455 requires of clients, unless not)."""
    return Frame(opcode, payload, fin=fin).serialize(mask=mask, extensions=[])


def text(message: dict[str, object]) -> bytes:
    return frame(Opcode.TEXT, orjson.dumps(message))


def upgrade_request(
    token: str | None,
    *,
    path: str = "/v1/ws",
    version: str = "1.1",
    headers: Iterable[tuple[str, str]] = (),
) -> bytes:
    """A WebSocket upgrade request head."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/{version}",
        "Host: 127.0.0.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Raw:
    """One raw TCP connection to the server."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.protocol = ClientProtocol(parse_uri("ws://127.0.0.1/v1/ws"), state=OPEN)

    @classmethod
    async def open(cls, live: LiveServer, source: str | None = None) -> Raw:
        return await cls.open_url(live.url, source)

    @classmethod
    async def open_url(cls, url: str, source: str | None = None) -> Raw:
        """A connection to ``url``, from the loopback address ``source`` if given (Linux
        routes all of 127.0.0.0/8 to the loopback interface: one address per peer)."""
        host, port = url.removeprefix("http://").split(":")
        local = None if source is None else (source, 0)
        reader, writer = await asyncio.open_connection(host, int(port), local_addr=local)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response_head(self, within: float = 5.0) -> tuple[int, bytes]:
        """The status and head of the server's HTTP answer; bytes after it go to frames."""
        async with asyncio.timeout(within):
            head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        return status, head

    async def upgrade(self, token: str, **kwargs: object) -> int:
        await self.send(upgrade_request(token, **kwargs))  # type: ignore[arg-type]
        status, _ = await self.response_head()
        return status

    async def closed_within(self, within: float) -> bool:
        """Whether the server ends the stream (EOF or reset) within ``within`` seconds."""
        try:
            async with asyncio.timeout(within):
                while await self.reader.read(65536):
                    pass
        except TimeoutError:
            return False
        except ConnectionError:
            pass
        return True

    async def close_code(self, within: float = 5.0) -> int | None:
        """Read frames until the server's close frame: its code (``None``: the stream
        ended without one)."""
        async with asyncio.timeout(within):
            while True:
                try:
                    data = await self.reader.read(65536)
                except ConnectionError:
                    return None
                if not data:
                    return None
                self.protocol.receive_data(data)
                for event in self.protocol.events_received():
                    if isinstance(event, Frame) and event.opcode is Opcode.CLOSE:
                        return Close.parse(event.data).code

    async def messages(self, count: int, within: float = 5.0) -> list[dict[str, object]]:
        """The next ``count`` text messages."""
        found: list[dict[str, object]] = []
        async with asyncio.timeout(within):
            while len(found) < count:
                data = await self.reader.read(65536)
                assert data, "stream ended"
                self.protocol.receive_data(data)
                for event in self.protocol.events_received():
                    if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                        found.append(orjson.loads(event.data))
        return found

    def close(self) -> None:
        self.writer.close()


@asynccontextmanager
async def raw_connection(live: LiveServer) -> AsyncIterator[Raw]:
    raw = await Raw.open(live)
    try:
        yield raw
    finally:
        raw.close()


async def round_trip(ws: ClientConnection, within: float = 5.0) -> float:
    """Seconds from a ``ping`` message to its ``pong`` on ``ws``."""
    started = time.perf_counter()
    await ws.send(orjson.dumps({"op": "ping", "t": started}).decode())
    async with asyncio.timeout(within):
        while True:
            answer = orjson.loads(await ws.recv())
            if answer["op"] == "pong" and answer["t"] == started:
                return time.perf_counter() - started


def assert_clean_log(records: Iterable[logging.LogRecord], secrets: Iterable[str] = ()) -> None:
    """No ERROR line, no traceback, no secret in what the server logged."""
    secrets = tuple(secrets)
    for record in records:
        if record.name.startswith("websockets.client"):
            continue  # the test's own client library, not the server
        line = record.getMessage()
        where = f"{record.levelname} {record.name}: {line}"
        assert record.levelno < logging.ERROR, where
        assert record.exc_info is None, where
        assert "Traceback" not in line, where
        for secret in secrets:
            assert secret not in line, where


@pytest.fixture
def server_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Everything the in-process server logs at INFO and above (``server.*`` at DEBUG),
    uvicorn's loggers included (they do not propagate to the root)."""
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="server")
    uvicorn_loggers = [logging.getLogger(name) for name in ("uvicorn", "uvicorn.access")]
    for logger in uvicorn_loggers:
        logger.addHandler(caplog.handler)
    try:
        yield caplog
    finally:
        for logger in uvicorn_loggers:
            logger.removeHandler(caplog.handler)
