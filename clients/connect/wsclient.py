"""A lean WebSocket client for load generation: websockets' sans-I/O protocol on a transport.

The ``websockets`` asyncio client runs a reader task, a keepalive task and several futures
per connection; at 10,000+ connections that overhead is what the load generator would
measure instead of the server. Here one :class:`WSClient` is an :class:`asyncio.Protocol`
whose callbacks feed :class:`websockets.client.ClientProtocol` (handshake, framing,
masking, automatic pongs and the closing handshake) and hand each text message to a
callback together with the time it arrived, so no task exists per connection.

:func:`open_ws` opens one and waits for the handshake; it raises :class:`HandshakeFailed`
for a refused upgrade (with the HTTP status), :class:`TimeoutError`, or :class:`OSError`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any, cast

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from server.protocol import retry_after_s

MAX_MESSAGE_BYTES = 1 << 20

OnText = Callable[["WSClient", bytes, float], None]
"""Called with (connection, message bytes, arrival time in epoch seconds)."""
OnClose = Callable[["WSClient", int | None], None]
"""Called once when an open connection ends, with its close code (``None``: abrupt loss)."""


class HandshakeFailed(Exception):
    """The server refused the upgrade (``status`` is its HTTP status, 0 if none came;
    ``retry_after`` the seconds of its ``Retry-After`` header, if it sent one)."""

    def __init__(self, status: int, reason: str, retry_after: int | None = None) -> None:
        super().__init__(f"handshake refused: HTTP {status} {reason}".strip())
        self.status = status
        self.retry_after = retry_after


class WSClient(asyncio.Protocol):
    """One client connection. ``owner`` is free for the caller (the simulated device)."""

    __slots__ = (
        "_closed",
        "_on_close",
        "_on_text",
        "_request_headers",
        "_transport",
        "closed",
        "opened",
        "owner",
        "protocol",
    )

    def __init__(
        self,
        url: str,
        headers: Mapping[str, str],
        on_text: OnText,
        on_close: OnClose,
        owner: Any = None,
    ) -> None:
        self.protocol = ClientProtocol(parse_uri(url), max_size=MAX_MESSAGE_BYTES)
        self._request_headers = dict(headers)
        self._on_text = on_text
        self._on_close = on_close
        self._transport: asyncio.Transport | None = None
        self._closed = False
        self.owner = owner
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        """Done when the TCP connection is gone."""

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, only alike.
        self._transport = cast(asyncio.Transport, transport)
        request = self.protocol.connect()
        for name, value in self._request_headers.items():
            request.headers[name] = value
        self.protocol.send_request(request)
        self._flush()

    def data_received(self, data: bytes) -> None:
        now = time.time()
        protocol = self.protocol
        protocol.receive_data(data)
        for event in protocol.events_received():
            if isinstance(event, Frame):
                if event.opcode is Opcode.TEXT:
                    self._on_text(self, event.data, now)
            elif isinstance(event, Response):
                self._handshake_done(event)
        self._flush()

    def eof_received(self) -> bool | None:
        self.protocol.receive_eof()
        self._flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        was_open = self._handshake_succeeded()
        if not self.opened.done():
            self.opened.set_exception(exc or HandshakeFailed(0, "connection closed"))
            self.opened.exception()  # retrieved: open_ws reports it, nobody else must
        if not self._closed:
            self._closed = True
            self.closed.set_result(None)
            if was_open:
                self._on_close(self, self.protocol.close_code)

    # -- API ---------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._handshake_succeeded() and not self._closed

    def send_text(self, data: bytes) -> None:
        """Send one text message (``data`` is UTF-8); silently dropped once closing."""
        if self._transport is None or self._transport.is_closing():
            return
        try:
            self.protocol.send_text(data)
        except Exception:  # InvalidState: the closing handshake has started
            return
        self._flush()

    def close(self, code: int = 1000) -> None:
        """Start the closing handshake (the transport closes when the server answers)."""
        if self._transport is None or self._transport.is_closing():
            return
        try:
            self.protocol.send_close(code)
        except Exception:
            self._transport.close()
            return
        self._flush()

    def abort(self) -> None:
        """Drop the TCP connection at once."""
        if self._transport is not None:
            self._transport.abort()

    # -- internals ---------------------------------------------------------------------

    def _handshake_succeeded(self) -> bool:
        # ``opened`` is cancelled when open_ws timed out waiting on it; a cancelled
        # future's exception() raises CancelledError.
        opened = self.opened
        return opened.done() and not opened.cancelled() and opened.exception() is None

    def _handshake_done(self, response: Response) -> None:
        if self.opened.done():
            return
        if self.protocol.handshake_exc is None:
            self.opened.set_result(None)
        else:
            retry_after = retry_after_s(response.headers.get("Retry-After"))
            refused = HandshakeFailed(response.status_code, response.reason_phrase, retry_after)
            self.opened.set_exception(refused)

    def _flush(self) -> None:
        transport = self._transport
        if transport is None:
            return
        for chunk in self.protocol.data_to_send():
            if chunk:
                transport.write(chunk)
            elif transport.can_write_eof():
                transport.write_eof()
        if self.protocol.close_expected():
            # The server closes the TCP connection first (RFC 6455 7.1.1); don't wait for
            # it longer than a moment.
            asyncio.get_running_loop().call_later(2.0, transport.abort)


async def open_ws(
    url: str,
    headers: Mapping[str, str],
    on_text: OnText,
    on_close: OnClose,
    *,
    owner: Any = None,
    local_addr: tuple[str, int] | None = None,
    connect_timeout: float = 10.0,
) -> WSClient:
    """Connect to ``url`` and finish the WebSocket handshake.

    Raises :class:`HandshakeFailed`, :class:`TimeoutError` or :class:`OSError`.
    """
    uri = parse_uri(url)
    loop = asyncio.get_running_loop()
    transport: asyncio.BaseTransport | None = None
    try:
        async with asyncio.timeout(connect_timeout):
            transport, client = await loop.create_connection(
                lambda: WSClient(url, headers, on_text, on_close, owner),
                uri.host,
                uri.port,
                local_addr=local_addr,
            )
            await client.opened
    except BaseException:
        if transport is not None:
            transport.abort()
        raise
    return client
