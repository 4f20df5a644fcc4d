"""The WebSocket endpoint ``/v1/ws``: one :class:`Connection` per accepted socket.

The handshake is checked before the upgrade (token → 401, other user or foreign Origin →
403, as HTTP responses). After it, the connection's own task reads and answers messages
(``hello``, ``frames``, ``subscribe``, ``ping``) while the hub offers it deltas. A delta
(and a reply) is written straight to the socket when nothing is queued and the socket takes
writes (:mod:`server.push.transport`); otherwise it goes through a bounded coalescing
:class:`~server.push.outbox.Outbox` drained by a writer task that exists only while there is
something to write. A peer whose send blocks past
``write_timeout`` or whose outbox overflows is abandoned (closed as a slow consumer).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from server import protocol as wire
from server.auth import DeviceKind, Principal, bearer, origin_allowed, verify
from server.errors import AuthError, Forbidden, FramesNotDurable, StoreError
from server.problems import auth_problem
from server.protocol import Delta, FrameLimits, ProtocolError, text_frame
from server.push.outbox import Outbox
from server.push.transport import PUSH_EXTENSION
from server.ratelimit import TokenBucket
from server.services import Services

log = logging.getLogger(__name__)

MAX_ERRORS = 10
"""Protocol errors a connection may make before it is closed (1008)."""
MAX_SUBSCRIPTIONS = 1000
SERVICE_MAX_AGE_MS = 400 * 24 * 3600 * 1000
"""Service tokens may write old frames (history seeding); devices are held to the setting."""


class _Close(Exception):
    """Ends a connection with a close code (raised inside the read loop)."""

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason


async def websocket_endpoint(websocket: WebSocket) -> None:
    """Authenticate, accept, and run one connection until it closes."""
    services: Services = websocket.app.state.services
    try:
        principal = authenticate(websocket, services)
    except AuthError as exc:
        services.metrics.handshake_rejects.labels(type(exc).__name__).inc()
        await websocket.send_denial_response(auth_problem(exc))
        return
    await websocket.accept()
    connection = Connection(websocket, principal, services)
    await connection.run()


def authenticate(websocket: WebSocket, services: Services) -> Principal:
    """The principal of a handshake. Raises :class:`AuthError` subclasses."""
    settings = services.settings
    token = bearer(websocket.headers.get("authorization")) or websocket.query_params.get("token")
    principal = verify(token, settings.secret, now_s=int(services.clock()))
    if not origin_allowed(
        websocket.headers.get("origin"), websocket.headers.get("host"), settings.allowed_origins
    ):
        raise Forbidden("origin not allowed")
    if (user_id := websocket.query_params.get("user_id")) is not None:
        principal.require(user_id)
    return principal


class Connection:
    """One client's socket: read loop, replies, and the outbox of pushed messages."""

    __slots__ = (
        "_bucket",
        "_closing",
        "_errors",
        "_expiry",
        "_limits",
        "_outbox",
        "_reader",
        "_write",
        "_writer",
        "principal",
        "services",
        "subscriptions",
        "versions",
        "websocket",
    )

    def __init__(self, websocket: WebSocket, principal: Principal, services: Services) -> None:
        settings = services.settings
        self.websocket = websocket
        self.principal = principal
        self.services = services
        self._outbox: Outbox | None = None
        self.subscriptions: set[str] = set()
        self.versions: dict[str, int] = {}
        self._bucket = TokenBucket(settings.rate_per_s, settings.rate_burst, services.clock())
        max_age = (
            SERVICE_MAX_AGE_MS
            if principal.device is DeviceKind.SERVICE
            else settings.max_frame_age_s * 1000
        )
        self._limits = FrameLimits(max_age_ms=max_age)
        self._errors = 0
        self._writer: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[Any] | None = None
        self._closing: tuple[int, str] | None = None
        self._expiry: asyncio.TimerHandle | None = None
        push = websocket.scope.get("extensions", {}).get(PUSH_EXTENSION)
        self._write: Callable[[bytes], bool] | None = None if push is None else push["write"]
        """Writes a whole frame now if the socket can take it (the fast path of pushes)."""

    @property
    def outbox(self) -> Outbox:
        """Messages waiting for the socket; made when first needed (most connections never
        need one: pushes to a socket that takes writes go straight to it)."""
        if self._outbox is None:
            self._outbox = Outbox(self.services.settings.outbox_limit)
        return self._outbox

    @property
    def wants_summaries(self) -> bool:
        return self.principal.device in (DeviceKind.DEBUG, DeviceKind.SERVICE)

    # -- lifecycle -------------------------------------------------------------------

    async def run(self) -> None:
        metrics = self.services.metrics
        device = self.principal.device.value
        metrics.connections.labels(device).inc()
        metrics.connections_opened.labels(device).inc()
        loop = asyncio.get_running_loop()
        self._reader = asyncio.current_task()
        remaining = self.principal.expires_at - self.services.clock()
        self._expiry = loop.call_later(
            max(0.0, remaining), self._abandon, wire.CLOSE_TOKEN_EXPIRED, "token expired"
        )
        code, reason = wire.CLOSE_NORMAL, ""
        try:
            await self._read_loop()
        except _Close as close:
            code, reason = close.code, close.reason
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._closing is None or task is None or task.uncancel() > 0:
                raise
            code, reason = self._closing
        except WebSocketDisconnect:
            code, reason = 0, ""
        except Exception:
            log.exception("connection of %s failed", self.principal.user_id)
            code, reason = wire.CLOSE_INTERNAL, "internal error"
        finally:
            self._expiry.cancel()
            metrics.connections.labels(device).dec()
            for user_id in self.subscriptions:
                await self.services.hub.leave(user_id, self)
            self.subscriptions.clear()
            if self._writer is not None:
                self._writer.cancel()
        if code:
            metrics.closes.labels(reason or str(code)).inc()
            await self._close(code, reason)

    async def _close(self, code: int, reason: str) -> None:
        try:
            async with asyncio.timeout(1.0):
                await self.websocket.close(code, reason)
        except (TimeoutError, RuntimeError, OSError, WebSocketDisconnect):
            # Already closed by the peer, or it stopped reading: nothing more to say.
            pass
        except Exception as exc:  # uvicorn's ClientDisconnected is not public API
            log.debug("close of %s failed: %r", self.principal.user_id, exc)

    def _abandon(self, code: int, reason: str) -> None:
        """Stop this connection from outside its task (slow peer, expired token)."""
        if self._closing is not None:
            return
        self._closing = (code, reason)
        if self._reader is not None:
            self._reader.cancel()

    # -- pushed messages (hub side) ----------------------------------------------------

    def offer(self, text: str, delta: Delta | None, frame: bytes) -> None:
        """Send a pushed message now, or queue it; abandon the peer if its outbox is full.

        With nothing queued and a socket that takes writes, ``frame`` (``text`` framed once by
        the hub for every peer) is written synchronously: no task, no await. Otherwise the
        message goes through the coalescing outbox and its writer task.
        """
        if self._closing is not None:
            return
        if delta is not None:
            if delta.version <= self.versions.get(delta.user_id, -1):
                return  # the client already has this version (from a snapshot)
            self.versions[delta.user_id] = delta.version
        if self._writer is None and self._write is not None and self._write(frame):
            return
        if delta is not None:
            outbox = self.outbox
            merged = outbox.merged
            accepted = outbox.put_delta(delta, text)
            if outbox.merged != merged:
                self.services.metrics.outbox_drops.labels("coalesced").inc()
        else:
            accepted = self.outbox.put(text)
        if not accepted:
            self.services.metrics.outbox_drops.labels("full").inc()
            self.services.metrics.slow_peer_closes.inc()
            self._abandon(wire.CLOSE_POLICY, "slow consumer")
            return
        if self._writer is None:
            self._writer = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        metrics = self.services.metrics
        timeout = self.services.settings.write_timeout
        try:
            while (item := self.outbox.pop()) is not None:
                text, delta = item
                async with asyncio.timeout(timeout):
                    await self.websocket.send_text(text)
                if delta is not None:
                    lag = self.services.clock() - delta.t / 1000
                    metrics.push_latency.observe(max(0.0, lag))
        except TimeoutError:
            metrics.slow_peer_closes.inc()
            self._abandon(wire.CLOSE_POLICY, "slow consumer")
        except Exception as exc:
            # The peer is gone; the read loop sees the disconnect and cleans up.
            log.debug("writer of %s stopped: %r", self.principal.user_id, exc)
        finally:
            self._writer = None
            if self._outbox is not None and not self._outbox:
                self._outbox = None  # drained: back to direct writes, nothing kept

    # -- client messages (reader side) ---------------------------------------------------

    async def _reply(self, text: str) -> None:
        if (
            self._writer is None
            and self._write is not None
            and self._write(text_frame(text.encode()))
        ):
            return
        try:
            async with asyncio.timeout(self.services.settings.write_timeout):
                await self.websocket.send_text(text)
        except TimeoutError:
            self.services.metrics.slow_peer_closes.inc()
            raise _Close(wire.CLOSE_POLICY, "slow consumer") from None

    async def _read_loop(self) -> None:
        receive = self.websocket.receive
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", 1000))
            data = message.get("text")
            if data is None:
                data = message.get("bytes") or b""
            now = self.services.clock()
            if not self._bucket.take(now):
                await self._reply(wire.encode_error("rate_limited", "too many messages"))
                raise _Close(wire.CLOSE_POLICY, "rate limit")
            try:
                parsed = wire.parse_client_message(
                    data, now_ms=int(now * 1000), limits=self._limits
                )
            except ProtocolError as exc:
                await self._protocol_error(exc)
                continue
            await self._dispatch(parsed)

    async def _protocol_error(self, exc: ProtocolError) -> None:
        self._errors += 1
        await self._reply(wire.encode_error(exc.code, exc.message))
        if exc.code == "too_big":
            raise _Close(wire.CLOSE_TOO_BIG, "message too big")
        if self._errors > MAX_ERRORS:
            raise _Close(wire.CLOSE_POLICY, "too many protocol errors")

    async def _dispatch(self, message: wire.ClientMessage) -> None:
        if isinstance(message, wire.FrameBatch):
            await self._frames(message)
        elif isinstance(message, wire.Hello):
            await self._hello(self.principal.user_id, message.since)
        elif isinstance(message, wire.Subscribe):
            await self._subscribe(message.user_id or self.principal.user_id)
        else:
            await self._reply(wire.encode_pong(message.t, self.services.clock() * 1000))

    async def _frames(self, batch: wire.FrameBatch) -> None:
        metrics = self.services.metrics
        for rejection in batch.rejected:
            metrics.frames_rejected.labels(rejection.field).inc()
        user_id = self.principal.user_id
        try:
            await self.services.ingestor.submit(user_id, batch.frames)
        except (FramesNotDurable, StoreError) as exc:
            # Not acked: the phone keeps the frames and sends them again.
            log.warning("frames of %s (seq %d) not durable: %s", user_id, batch.seq, exc)
            await self._reply(
                wire.encode_error("internal", f"batch {batch.seq} not stored; resend")
            )
            return
        metrics.frames_accepted.labels("ws").inc(len(batch.frames))
        await self._reply(wire.encode_ack(batch.seq, len(batch.frames), batch.rejected))

    async def _hello(self, user_id: str, since: int | None) -> None:
        await self._join(user_id)
        state = await self.services.state.current(user_id)
        self.versions[user_id] = max(self.versions.get(user_id, -1), state.version)
        if since is not None and since == state.version:
            text = wire.encode_uptodate(state.version, state.state_hash)
        else:
            text = wire.encode_snapshot(snapshot_fields(state))
        if not self.outbox.put_snapshot(user_id, state.version, text):
            raise _Close(wire.CLOSE_POLICY, "slow consumer")
        if self._writer is None:
            self._writer = asyncio.create_task(self._drain())

    async def _subscribe(self, user_id: str) -> None:
        if not self.principal.may_access(user_id):
            await self._reply(wire.encode_error("forbidden", f"may not subscribe to {user_id}"))
            raise _Close(wire.CLOSE_FORBIDDEN, "forbidden")
        await self._hello(user_id, None)

    async def _join(self, user_id: str) -> None:
        if user_id in self.subscriptions:
            return
        if len(self.subscriptions) >= MAX_SUBSCRIPTIONS:
            raise _Close(wire.CLOSE_POLICY, "too many subscriptions")
        self.subscriptions.add(user_id)
        await self.services.hub.join(user_id, self)


def snapshot_fields(state: Any) -> dict[str, Any]:
    """The snapshot mapping of a :class:`~server.store.base.UserState`."""
    return {
        "user_id": state.user_id,
        "version": state.version,
        "state_hash": state.state_hash,
        "updated_at": state.updated_at,
        **state.visible(),
    }
