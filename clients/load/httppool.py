"""A lean keep-alive HTTP/1.1 client for the load generator: asyncio protocols + httptools.

The state-change driver sends ~1,000 small POSTs a second from the same process (and the
same core) that holds thousands of device sockets. httpx spends ~0.5 ms of CPU on each
(URL objects, anyio streams, a scan of its pool per request), which at that rate is most of
a core taken from the devices and the server under test. This pool writes pre-built
request bytes to a fixed set of keep-alive connections and parses the answers with
httptools (the C parser uvicorn uses): tens of microseconds per request.

One request per connection at a time (no pipelining); a connection the server closes, or
that fails, is replaced on the next request. Plain ``http://`` only: it is for loopback.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import NamedTuple, cast
from urllib.parse import urlsplit

import httptools


class HTTPResponse(NamedTuple):
    status: int
    body: bytes


class _Connection(asyncio.Protocol):
    """One keep-alive connection; :meth:`send` one request and wait for its response."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[HTTPResponse] | None = None
        self._body: list[bytes] = []
        self.closed = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"bad HTTP response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ConnectionError("the server closed the connection") if exc is None else exc)

    # httptools callbacks
    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        response = HTTPResponse(self._parser.get_status_code(), b"".join(self._body))
        self._body = []
        if not self._parser.should_keep_alive():
            self.close()
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    def send(self, request: bytes) -> asyncio.Future[HTTPResponse]:
        waiter = asyncio.get_running_loop().create_future()
        if self.closed or self._transport is None:
            waiter.set_exception(ConnectionError("connection closed"))
            return waiter
        self._waiter = waiter
        self._transport.write(request)
        return waiter

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    def _fail(self, exc: BaseException) -> None:
        self.close()
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)


class HTTPPool:
    """Up to ``size`` keep-alive connections to the server at ``base_url``.

    ``headers`` are sent with every request. Requests beyond ``size`` wait for a free
    connection, in order.
    """

    def __init__(
        self,
        base_url: str,
        *,
        size: int = 16,
        headers: dict[str, str] | None = None,
        request_timeout: float = 30.0,
    ) -> None:
        url = urlsplit(base_url)
        if url.scheme != "http" or url.hostname is None:
            raise ValueError(f"HTTPPool speaks plain http:// only, not {base_url!r}")
        if size < 1:
            raise ValueError("size must be at least 1")
        self._host = url.hostname
        self._port = url.port or 80
        self._size = size
        self._timeout = request_timeout
        extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        self._headers = f"Host: {url.netloc}\r\n{extra}".encode("latin-1")
        self._idle: list[_Connection] = []
        self._busy = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.opened = 0
        """Connections opened so far (keep-alive reuse keeps this at most ``size``)."""

    async def request(self, method: str, path: str, body: bytes = b"") -> HTTPResponse:
        """Send one request; raises :class:`OSError` (``ConnectionError`` included) or,
        after ``request_timeout`` seconds (waiting for a connection included),
        :class:`TimeoutError`."""
        head = f"{method} {path} HTTP/1.1\r\nContent-Length: {len(body)}\r\n".encode("latin-1")
        data = head + self._headers + b"\r\n" + body
        async with asyncio.timeout(self._timeout):
            connection = await self._acquire()
            try:
                return await connection.send(data)
            except BaseException:
                connection.close()  # a half-read response must not be reused
                raise
            finally:
                self._release(connection)

    async def close(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()

    async def _acquire(self) -> _Connection:
        while True:
            while self._idle:
                connection = self._idle.pop()
                if not connection.closed:
                    self._busy += 1
                    return connection
            if self._busy < self._size:
                self._busy += 1
                try:
                    _, connection = await asyncio.get_running_loop().create_connection(
                        _Connection, self._host, self._port
                    )
                except BaseException:
                    self._busy -= 1
                    self._wake()
                    raise
                self.opened += 1
                return connection
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._wake()  # pass the turn on
                else:
                    self._waiters.remove(waiter)
                raise

    def _release(self, connection: _Connection) -> None:
        self._busy -= 1
        if not connection.closed:
            self._idle.append(connection)
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
