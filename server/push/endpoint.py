"""The WebSocket endpoint ``/v1/ws``: one :class:`Connection` per accepted socket.

:mod:`server.push.transport` reads the HTTP request, and for an upgrade of ``/v1/ws`` asks
:func:`authenticate` who is calling (token → 401, another user or a foreign Origin → 403,
answered as HTTP) and completes the handshake with ``websockets``' sans-I/O
:class:`~websockets.server.ServerProtocol`. The socket then belongs to a
:class:`Connection`, the asyncio protocol of the open WebSocket: it feeds bytes to
``websockets``, hands every frame and message to its pure :class:`~server.push.session.Session`
and carries out what the session decides.

Writing is the :class:`~server.push.delivery.Delivery` half of the connection (direct
writes of frames framed once by the hub, an outbox and a writer task only for a socket that
is behind, the battery saver's held deltas). Reading: messages that need the store or
the hub are worked off in order by a task that exists only while there is work; while it is
behind, reading pauses, so a client cannot queue work without bound.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from typing import Any, Final, Protocol
from urllib.parse import parse_qs, urlsplit

from starlette.websockets import WebSocket
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import OPEN
from websockets.server import ServerProtocol

from brain.tiers import Limit
from server.auth import Principal, bearer, origin_allowed, verify
from server.errors import Forbidden, FramesNotDurable, StoreError
from server.protocol import Disconnect, Disconnects, FrameBatch, text_frame
from server.push import acks, penalty
from server.push.admission import drain_window
from server.push.delivery import Delivery
from server.push.session import (
    MAX_ERRORS,
    MAX_MESSAGE_S,
    SERVICE_MAX_AGE_MS,
    Action,
    Close,
    Join,
    RecordSeen,
    Reply,
    Session,
    SessionLimits,
    SettleCommand,
    Store,
)
from server.services import Services
from server.store.codec import state_fields

__all__ = [
    "MAX_ERRORS",
    "SERVICE_MAX_AGE_MS",
    "Connection",
    "authenticate",
    "websocket_endpoint",
]

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S: Final = 2.0
"""How long a closing peer may take to answer our close frame before the socket is dropped."""
FEED_BYTES: Final = 4096
"""Bytes handed to websockets' parser at a time (see :meth:`Connection.data_received`)."""
READ_AFTER_CLOSE_BYTES: Final = 64 * 1024
"""Bytes a closing peer may still send (its close frame is a few) before it is dropped."""
CLOSING_FEED_BYTES: Final = 512
"""Bytes parsed at a time once closing: small frames cost per frame, not per byte."""
FRAMES_AFTER_CLOSE: Final = 128
"""Frames a closing peer may still send before it is dropped: a flood of empty frames is
cheap in bytes and dear to parse (64 KiB of them is ~11,000 frames)."""
PAUSE_READING_AT: Final = 16
"""Messages waiting for the store or hub before the connection stops reading the socket."""
JOIN_REREADS: Final = 3
"""Reads again of a joining user's state when a newer delta went out during the read (the
device is then told to say hello again rather than sent an older snapshot)."""

_FAILED_BY_CODE: Final = {
    d.code: d for d in (Disconnects.PROTOCOL_ERROR, Disconnects.BAD_UTF8, Disconnects.TOO_BIG)
}
"""The disconnect of each close code websockets fails a connection with (bad framing)."""
_DATA: Final = frozenset({Opcode.TEXT, Opcode.BINARY, Opcode.CONT})


class Registry(Protocol):
    """Where the server keeps its open connections and background tasks (uvicorn's
    ``ServerState``): graceful shutdown calls ``shutdown()`` on each connection and waits
    until both sets are empty."""

    connections: set[Any]
    tasks: set[asyncio.Task[None]]


def authenticate(request: Request, services: Services, own: tuple[str, ...]) -> Principal:
    """The principal of a handshake request; ``own``: the server's own origins
    (:func:`server.auth.own_origins`).

    Raises :class:`~server.errors.AuthError` subclasses: no or bad token, an Origin that is
    neither the server's public URL nor allowed, a ``user_id`` the token may not touch.
    """
    settings = services.settings
    # Devices send their token in a header and no query: parsing one is for browsers.
    query = parse_qs(urlsplit(request.path).query) if "?" in request.path else {}
    token = bearer(request.headers.get("Authorization")) or _first(query.get("token"))
    principal = verify(token, settings.secret, now_s=int(services.clock()), cache=services.tokens)
    origin = request.headers.get("Origin")
    if not origin_allowed(origin, own, settings.allowed_origins):
        raise Forbidden("origin not allowed")
    if (user_id := _first(query.get("user_id"))) is not None:
        principal.require(user_id)
    return principal


async def websocket_endpoint(websocket: WebSocket) -> None:
    """``/v1/ws`` reached through ASGI instead of the edge (another ASGI server, a test
    client): refused (HTTP 403). The WebSocket is served by :mod:`server.push.transport`
    only; the route stays in the app's table for the route list and the OpenAPI document."""
    await websocket.close(code=Disconnects.TRY_LATER.code)


def _first(values: list[str] | None) -> str | None:
    return values[0] if values else None


def session_limits(services: Services) -> SessionLimits:
    """The per-connection limits of the settings, raised to the user's tier's rate."""
    settings = services.settings
    return SessionLimits(
        settings.rate_per_s,
        settings.rate_burst,
        settings.max_frame_age_s * 1000,
        tiers=services.state.tier_book,
    )


class Connection(Delivery):
    """One open WebSocket: ``websockets``' protocol on an asyncio transport, driven by a
    :class:`Session`; a peer of the hub. Its writing half is :class:`Delivery`."""

    __slots__ = (
        "_close_timer",
        "_expiry",
        "_frames_after_close",
        "_keepalive",
        "_last_rx",
        "_message",
        "_message_text",
        "_message_timer",
        "_pending",
        "_ping_sent",
        "_read_after_close",
        "_reading_paused",
        "_registry",
        "_worker",
    )

    def __init__(
        self,
        transport: asyncio.Transport,
        ws: ServerProtocol,
        session: Session,
        services: Services,
        registry: Registry,
    ) -> None:
        super().__init__(transport, ws, session, services)
        self._registry = registry
        self._pending: deque[Action] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._reading_paused = False
        self._read_after_close = 0
        self._frames_after_close = 0
        self._message: list[bytes] | None = None
        self._message_text = False
        self._message_timer: asyncio.TimerHandle | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._keepalive: asyncio.TimerHandle | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._last_rx = time.monotonic()
        self._ping_sent: float | None = None

    @property
    def principal(self) -> Principal:
        return self.session.principal

    @property
    def wants_summaries(self) -> bool:
        return self.session.wants_summaries

    # -- lifecycle -------------------------------------------------------------------

    def start(self, received: bytes) -> None:
        """Begin serving, after the 101 was written; ``received``: bytes read past the
        handshake request (the client's first frames, if it did not wait)."""
        loop = asyncio.get_running_loop()
        self._registry.connections.add(self)
        device = self.principal.device.value
        self.services.metrics.connections.labels(device).inc()
        self.services.metrics.connections_opened.labels(device).inc()
        self._keepalive = loop.call_later(self.services.settings.ping_interval, self._tick)
        remaining = self.principal.expires_at - self.services.clock()
        self._expiry = loop.call_later(
            max(0.0, remaining), self._close, Disconnects.TOKEN_EXPIRED, None
        )
        if received:
            self.data_received(received)

    def shutdown(self) -> None:
        """Graceful server stop: close with 1012, the client reconnects to another node.

        Not all at once: each connection closes at a random moment of the drain window
        (:func:`~server.push.admission.drain_window`), so the fleet returns to the other
        nodes at a rate they admit; until then it is served as before.
        """
        settings = self.services.settings
        window = drain_window(
            len(self._registry.connections), settings.drain_s, settings.admit_rate
        )
        delay = random.random() * window
        if delay <= 0:
            self._close(Disconnects.RESTART)
            return
        # The close timer slot: _close replaces it with its own once this one fires.
        self._close_timer = asyncio.get_running_loop().call_later(
            delay, self._close, Disconnects.RESTART, None
        )

    def connection_lost(self, exc: Exception | None) -> None:
        timers = (
            self._keepalive,
            self._expiry,
            self._close_timer,
            self._message_timer,
            self._hold_timer,
        )
        for timer in timers:
            if timer is not None:
                timer.cancel()
        for task in (self._worker, self._writer):
            if task is not None:
                task.cancel()
        if self._resumed is not None and not self._resumed.done():
            self._resumed.cancel()
        self._pending = None
        self._outbox = None
        self._held = None
        self._direct = False
        if self._closing is None:
            self._closing = Disconnects.NORMAL  # nothing more is sent on a lost socket
        if self in self._registry.connections:
            self._registry.connections.discard(self)
            self.services.metrics.connections.labels(self.principal.device.value).dec()
        if self.session.subscriptions:
            users, self.session.subscriptions = self.session.subscriptions, set()
            self.services.hub.drop(users, self)

    def _count_limit(self, limit: Limit) -> None:
        """Count a tier limit this connection went over (its user's tier, a fixed set)."""
        tier = self.session.rate_tier()
        if tier is not None and self.services.cost is not None:
            self.services.cost.limited(tier, limit)

    def _close(self, disconnect: Disconnect, text: str | None = None) -> None:
        """Close with ``disconnect`` (after ``text``); drop the socket if the peer does not
        answer within :data:`CLOSE_TIMEOUT_S`."""
        if self._closing is not None:
            return
        self._closing = disconnect
        self._open = self._direct = False
        metrics = self.services.metrics
        metrics.closes.labels(disconnect.reason).inc()
        penalty.report(self.services, self._transport, disconnect.reason)
        if disconnect is Disconnects.SLOW_CONSUMER:
            metrics.slow_peer_closes.inc()
        self._pending = None
        if self._transport.is_closing():
            return
        if text is not None and self._ws.state is OPEN:
            self._transport.write(text_frame(text.encode()))
        if self._ws.state is OPEN:
            self._ws.send_close(disconnect.code, disconnect.reason)
            self._flush()
        self._close_timer = asyncio.get_running_loop().call_later(
            CLOSE_TIMEOUT_S, self._transport.abort
        )

    def _tick(self) -> None:
        """Keepalive: ping every ``ping_interval``; no byte from the peer within
        ``ping_timeout`` of a ping means it is gone (the socket is dropped)."""
        settings = self.services.settings
        loop = asyncio.get_running_loop()
        if self._ping_sent is None:
            if self._ws.state is not OPEN:
                return
            self._ping_sent = time.monotonic()
            self._ws.send_ping(b"")
            self._flush()
            self._keepalive = loop.call_later(settings.ping_timeout, self._tick)
            return
        if self._last_rx < self._ping_sent:
            self._transport.abort()
            return
        self._ping_sent = None
        delay = max(0.0, settings.ping_interval - settings.ping_timeout)
        self._keepalive = loop.call_later(delay, self._tick)

    # -- bytes in ----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._last_rx = time.monotonic()
        # websockets parses all it is given at once; fed in slices, a flood of tiny frames
        # costs at most one slice beyond the frame that broke a limit.
        start, size = 0, len(data)
        while start < size:
            closing = self._closing is not None
            step = CLOSING_FEED_BYTES if closing else FEED_BYTES
            chunk = data if start == 0 and size <= step else data[start : start + step]
            start += step
            if closing:
                # Closing: only the peer's close frame is still of interest. A peer that
                # keeps sending instead is not parsed any longer than this.
                self._read_after_close += len(chunk)
                if self._read_after_close > READ_AFTER_CLOSE_BYTES:
                    self._transport.abort()
                    return
            if not self._feed(chunk):
                return

    def _feed(self, data: bytes) -> bool:
        """Parse ``data`` and act on its frames; ``False`` once the stream has ended."""
        ws = self._ws
        closing = self._closing is not None
        try:
            ws.receive_data(data)
        except EOFError:  # data after the end of the stream: nothing to do with it
            return False
        if ws.state is not OPEN:
            # A close frame came in, or websockets failed the connection.
            self._open = self._direct = False
        self._flush()  # pongs, the echo of a close, the close of a bad frame
        events = ws.events_received()
        if closing:  # only its close frame is of interest, and websockets handles that
            self._frames_after_close += len(events)
            if self._frames_after_close > FRAMES_AFTER_CLOSE:
                self._transport.abort()
                return False
            return True
        for event in events:
            if self._closing is not None:
                break
            if isinstance(event, Frame):
                self._on_frame(event)
        if self._closing is None and ws.close_sent is not None and ws.close_rcvd is None:
            # websockets failed the connection (bad framing, a message over the limit).
            code = ws.close_sent.code
            self._closing = _FAILED_BY_CODE.get(code, Disconnects.PROTOCOL_ERROR)
            self._direct = False
            self.services.metrics.closes.labels(self._closing.reason).inc()
            penalty.report(self.services, self._transport, self._closing.reason)
        return True

    def eof_received(self) -> bool | None:
        if self._ws.state is OPEN:
            # The peer went away without a close frame (a dropped network, a killed app):
            # nothing is left to say to it, so websockets' end-of-stream bookkeeping is
            # skipped (a reconnect storm's cut brings thousands at once) and the transport
            # closes itself (a false return).
            return None
        self._ws.receive_eof()  # after a close frame: websockets ends the stream its way
        self._flush()
        return None

    def _on_frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        payload = frame.data if isinstance(frame.data, bytes) else bytes(frame.data)
        if opcode is Opcode.CLOSE:
            self._closing = Disconnects.NORMAL  # websockets echoed it and ends the stream
            self._direct = False
            return
        data = opcode in _DATA
        first = opcode is Opcode.TEXT or opcode is Opcode.BINARY
        verdict = self.session.on_frame(
            data=data, first=first, fin=frame.fin, now=self.services.clock()
        )
        if verdict is not None:
            if verdict.disconnect is Disconnects.RATE_LIMIT:
                self._count_limit(Limit.WS_RATE)
            self._close(verdict.disconnect, verdict.text)
            return
        if not data:
            return  # a ping (websockets answered it) or a pong (the peer is alive)
        if first and frame.fin:
            self._on_message(payload, text=opcode is Opcode.TEXT)
            return
        if first:
            self._message, self._message_text = [payload], opcode is Opcode.TEXT
            self._message_timer = asyncio.get_running_loop().call_later(
                MAX_MESSAGE_S, self._close, Disconnects.FRAGMENTED, None
            )
            return
        assert self._message is not None  # websockets refuses a continuation out of place
        self._message.append(payload)
        if frame.fin:
            data_parts, self._message = self._message, None
            if self._message_timer is not None:
                self._message_timer.cancel()
                self._message_timer = None
            self._on_message(b"".join(data_parts), text=self._message_text)

    def _on_message(self, data: bytes, *, text: bool) -> None:
        action = self.session.on_message(data, text=text, now=self.services.clock())
        self._reroute()  # the message may have changed the delivery policy
        if self._held is not None:
            self._hold_again()  # the message may have changed the delivery policy
        if self._worker is None and isinstance(action, Reply | Close):
            self._act(action)
            return
        if self._pending is None:
            self._pending = deque()
        self._pending.append(action)
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._work())
        elif len(self._pending) >= PAUSE_READING_AT and not self._reading_paused:
            self._reading_paused = True
            self._transport.pause_reading()

    def _act(self, action: Reply | Close) -> None:
        if isinstance(action, Reply):
            self._send(action.text)
        else:
            self._close(action.disconnect, action.text)

    async def _work(self) -> None:
        """Carry out waiting actions in order; ends when none is left."""
        try:
            while self._pending and self._closing is None:
                action = self._pending.popleft()
                if self._reading_paused and len(self._pending) < PAUSE_READING_AT // 2:
                    self._reading_paused = False
                    self._transport.resume_reading()
                if isinstance(action, Store):
                    await self._store(action.batch)
                elif isinstance(action, Join):
                    await self._join(action)
                elif isinstance(action, RecordSeen | SettleCommand):
                    if text := await acks.carry_out(self.services, self.session, action):
                        self._send(text)
                else:
                    self._act(action)
        except Exception:
            log.exception("connection of %s failed", self.principal.user_id)
            self._close(Disconnects.INTERNAL)
        finally:
            self._worker = None

    async def _store(self, batch: FrameBatch) -> None:
        metrics = self.services.metrics
        for rejection in batch.rejected:
            metrics.frames_rejected.labels(rejection.field).inc()
        user_id = self.principal.user_id
        try:
            await self.services.ingestor.submit(user_id, batch.frames)
        except (FramesNotDurable, StoreError) as exc:
            # Not acked: the phone keeps the frames and sends them again.
            reason = type(exc).__name__
            log.warning("frames of %s (seq %d) not durable: %s", user_id, batch.seq, reason)
            self._send(self.session.not_stored(batch))
            return
        metrics.frames_accepted.labels("ws").inc(len(batch.frames))
        self._send(self.session.stored(batch))

    async def _join(self, join: Join) -> None:
        await self.services.hub.join(join.user_id, self)
        try:
            state = await self.services.state.current(join.user_id)
            # A delta published during the read went out already (the hub had us): a
            # snapshot older than it would step the device back. The commit it came from
            # is durable, so reading again returns it or a later one.
            for _ in range(JOIN_REREADS):
                if state.version >= self.session.versions.get(join.user_id, -1):
                    break
                state = await self.services.state.current(join.user_id)
            else:
                if state.version < self.session.versions.get(join.user_id, -1):
                    self._send(self.session.unavailable(join.user_id))
                    return
        except StoreError as exc:
            log.warning("state of %s not readable: %s", join.user_id, type(exc).__name__)
            self._send(self.session.unavailable(join.user_id))
            return
        text = self.session.snapshot(join.user_id, state_fields(state), join.since)
        # Nothing waiting that the snapshot could supersede or must follow, and a socket
        # that takes writes (a device saying hello, nearly always): written now, without an
        # outbox or a writer task.
        idle = self._writer is None and self._held is None and not self._outbox
        if not (idle and self._write(text_frame(text.encode()))):
            self._unhold_into_outbox()  # the snapshot supersedes what it includes
            if not self.outbox.put_snapshot(join.user_id, state.version, text):
                self._close(Disconnects.SLOW_CONSUMER)
                return
            self._ensure_writer()
        if (commands := await acks.pending_commands(self.services, state)) is not None:
            self._send(commands)  # at least once: every hello gets what is still pending
