"""uvicorn's sans-I/O WebSocket protocol with a direct write path for pushed messages.

Fan-out is the server's hot path: one committed delta goes to every subscribed socket. Going
through ASGI costs, per socket, a send coroutine chain, an ``await`` on the writable event
and a framing of the same text again. Server frames are not masked, so the bytes of one
text frame are the same for every socket: the hub frames a delta once
(:func:`server.protocol.text_frame`) and :class:`PushProtocol` offers the application a
synchronous ``write(frame) -> bool`` through the scope's ``extensions``
(``"companion.push"``). It writes only when the connection is open and its transport is not
paused; otherwise it returns ``False`` and the caller queues the message on its slower path
(the outbox and its writer task, which waits for the transport with a deadline).

Accepted sockets get a bounded kernel send buffer (:data:`SEND_BUFFER_BYTES`), so a peer
that stops reading is noticed (paused transport, outbox, ``write_timeout``) after a few
hundred kilobytes rather than after megabytes. The protocol also keeps less per connection
than uvicorn's (memory per idle connection is a target): the receive queue is a list and
one future instead of an ``asyncio.Queue`` (four deques), the writable flag keeps no waiter
deque, and the handshake request and response are dropped once the upgrade is sent
(including the copy websockets' handshake parser keeps). Used as ``ws=`` in
:func:`server.runner.uvicorn_config`.

It relies on attributes of uvicorn's class that are not public API (``queue``,
``writable``, ``conn``, ``transport``, ``close_sent``, ``disconnected``, ``request``,
``response``); every server test runs through it, and
``tests/server/test_push_protocol.py`` checks the parts this module changes, so a uvicorn
upgrade that moves them fails the suite rather than the fleet.
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING, Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request
from websockets.protocol import OPEN, Protocol

if TYPE_CHECKING:
    from uvicorn._types import ASGIReceiveEvent, ASGISendEvent
    from uvicorn.config import Config
    from uvicorn.server import ServerState

SEND_BUFFER_BYTES = 128 * 1024
"""Kernel send buffer of an accepted socket (Linux doubles it for bookkeeping). Pushes are
small; without a bound, loopback and LAN autotuning let a peer that stopped reading pile up
megabytes per socket in the kernel before the write buffer's high-water mark, and with it
``write_timeout``, ever applies."""

PUSH_EXTENSION = "companion.push"
"""Scope extension: ``{"write": Callable[[bytes], bool]}`` writes one pre-framed message."""


class _Inbox:
    """The part of ``asyncio.Queue`` uvicorn's protocol uses, for one reader."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[ASGIReceiveEvent] = []
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: ASGIReceiveEvent) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> ASGIReceiveEvent:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.pop(0)

    def empty(self) -> bool:
        return not self._items


class _Flag:
    """The part of ``asyncio.Event`` uvicorn's protocol uses, without an idle deque."""

    __slots__ = ("_value", "_waiters")

    def __init__(self) -> None:
        self._value = True
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        self._value = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._value = False

    async def wait(self) -> bool:
        if self._value:
            return True
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        await waiter
        return True


class PushProtocol(WebSocketsSansIOProtocol):
    """:class:`WebSocketsSansIOProtocol` plus ``write(frame)`` and a smaller footprint."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.queue = _Inbox()  # type: ignore[assignment]
        self.writable = _Flag()  # type: ignore[assignment]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
            except OSError:  # not a TCP socket (tests on other transports): keep the default
                pass

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        del self.request  # the scope has what the app needs of it
        if self.response.status_code != 101:
            return  # rejected by websockets (bad handshake); already answered and closing
        # Pre-framed bytes are only valid without extensions (permessage-deflate is off).
        if not self.conn.extensions:
            self.scope["extensions"][PUSH_EXTENSION] = {"write": self.write_frame}
        # websockets' handshake parser keeps the request (headers and all) as a local of its
        # suspended generator for the life of the connection. With nothing of the first frame
        # read yet (clients wait for the 101), restart on the frame parser alone, which is
        # where that generator is suspended anyway.
        if not self.conn.reader.buffer:
            self.conn.parser = Protocol.parse(self.conn)
            next(self.conn.parser)

    async def send(self, message: ASGISendEvent) -> None:
        await super().send(message)
        if message["type"] == "websocket.accept" and self.handshake_complete:
            self.response = None  # type: ignore[assignment]  # sent; not needed again

    def write_frame(self, frame: bytes) -> bool:
        """Write one complete server frame now; ``False`` (nothing written) if it cannot."""
        if (
            self.close_sent
            or self.disconnected
            or not self.writable.is_set()
            or self.conn.state is not OPEN
        ):
            return False
        self.transport.write(frame)
        return True
