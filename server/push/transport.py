"""The socket edge: the asyncio protocol every accepted TCP connection starts with.

uvicorn builds one protocol object per accepted connection from the class its ``http``
setting names (``uvicorn.Config(http=EdgeProtocol)``, the documented seam: a protocol class
instead of ``"httptools"``); :func:`server.runner.uvicorn_config` passes this one. Device
sockets (:data:`WS_PATHS`) never reach uvicorn's WebSocket implementations; the operator's
fleet feed (``/ops/ws``, a handful of connections) is upgraded by uvicorn's sans-I/O one.
It reads each request head with ``httptools`` (the parser uvicorn's HTTP protocol uses)
and enforces what uvicorn does not:

- **a deadline** (``COMPANION_HANDSHAKE_TIMEOUT_S``) from the connection (or the first byte
  of a later request on a kept-alive one) to the end of the request, body included: a
  connection that dribbles its request (slowloris) is answered 408 and closed;
- **sizes**: a request target over :data:`MAX_TARGET_BYTES` is answered 414, a head over
  :data:`MAX_HEAD_BYTES`, a header line over :data:`MAX_HEADER_LINE_BYTES` or more than
  :data:`MAX_HEADERS` headers 431, and the connection is closed;
- **upgrades**: only the first request of a connection may be a WebSocket upgrade, only over
  HTTP/1.1 (else 400);
- **the penalty box**: a connection from an address that was closed for abuse again and
  again is refused from ``connection_made``, before a byte is read: held unread for up to
  a second, then answered 503 with ``Retry-After`` (:mod:`server.push.penalty`); every
  abuse refusal here is reported to the box;
- **admission**: device upgrades beyond ``COMPANION_ADMIT_RATE`` a second are answered 503
  with ``Retry-After`` before the token is verified (:mod:`server.push.admission`).

A plain HTTP request goes, with the bytes read so far, to uvicorn's ``httptools`` protocol
(the class ``http="httptools"`` names, built with the three arguments uvicorn passes to any
protocol class), which this protocol then feeds, still watching the deadline of each later
request. A WebSocket upgrade is answered here: :func:`server.push.endpoint.authenticate`
decides who may connect, ``websockets``' sans-I/O :class:`~websockets.server.ServerProtocol`
checks the handshake and writes the 101 (or the refusal), and the transport is handed to a
:class:`server.push.endpoint.Connection`. Nothing here reads a private name of uvicorn or
websockets.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import socket
import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Final, cast
from urllib.parse import urlsplit

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from websockets.datastructures import Headers
from websockets.exceptions import InvalidHeader
from websockets.http11 import Request, Response
from websockets.protocol import OPEN
from websockets.server import ServerProtocol

from server.auth import own_origins
from server.errors import AuthError
from server.problems import auth_problem
from server.protocol import MAX_MESSAGE_BYTES, MAX_RETRY_AFTER_S
from server.push import penalty
from server.push.admission import ADMISSION_REFUSED, Admission, device_key
from server.push.endpoint import Connection, Registry, authenticate, session_limits
from server.push.session import Session
from server.services import PartKey, Services

if TYPE_CHECKING:
    from uvicorn.server import ServerState

WS_PATH: Final = "/v1/ws"
WS_PATHS: Final = frozenset({WS_PATH, "/socket"})
"""Device WebSocket paths served by our own connection: ``/v1/ws``, and ``/socket`` (the
seeds' socket path, an alias)."""
APP_WS_PATHS: Final = frozenset({"/ops/ws"})
"""WebSocket routes of the app itself (the operator's fleet feed): upgraded by uvicorn's own
WebSocket protocol, like plain HTTP. Any other upgrade is answered 404."""
MAX_TARGET_BYTES: Final = 8 * 1024
"""Longest request target (path and query; a token in ``?token=`` fits easily)."""
MAX_HEADER_LINE_BYTES: Final = 8 * 1024
"""Longest header line (name and value)."""
MAX_HEAD_BYTES: Final = 32 * 1024
"""Longest request head (request line and all headers)."""
MAX_HEADERS: Final = 100
SEND_BUFFER_BYTES: Final = 128 * 1024
"""Kernel send buffer of an accepted socket (Linux doubles it for bookkeeping). Pushes are
small; without a bound, loopback and LAN autotuning let a peer that stopped reading pile up
megabytes per socket in the kernel before the write buffer's high-water mark, and with it
``write_timeout``, ever applies."""

FRAME_LOG: Final = logging.getLogger("server.push.frames")
"""The logger given to ``websockets``: it logs every connection at INFO and every frame,
payload included (sensor values), at DEBUG. Neither belongs in the log, at any level."""
FRAME_LOG.setLevel(logging.WARNING)


class EdgeProtocol(asyncio.Protocol):
    """The first protocol of every connection: request deadline and limits, then HTTP
    (uvicorn) or a WebSocket (:class:`~server.push.endpoint.Connection`)."""

    __slots__ = (
        "_app_state",
        "_config",
        "_deadline",
        "_fields",
        "_head",
        "_head_bytes",
        "_head_read",
        "_headers",
        "_holding",
        "_in_head",
        "_inner",
        "_parser",
        "_refusal",
        "_registry",
        "_server_state",
        "_target",
        "_target_bytes",
        "_transport",
    )

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._config = config
        self._registry: Registry = server_state
        self._server_state = server_state
        self._app_state = app_state
        self._transport: asyncio.Transport | None = None
        self._inner: HttpToolsProtocol | None = None
        self._parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self._head: bytearray | None = bytearray()
        """The bytes of the first request, until it is known to be HTTP or an upgrade."""
        self._deadline: asyncio.TimerHandle | None = None
        self._in_head = True
        self._head_read = False
        self._head_bytes = 0
        self._target_bytes = 0
        self._headers = 0
        self._refusal: tuple[HTTPStatus, str] | None = None
        self._holding: penalty.PenaltyBox | None = None
        """The penalty box whose refused connection this is while it is held."""
        self._target = bytearray()
        self._fields: list[tuple[bytes, bytes]] = []
        """The first request's target and header fields, as httptools reads them: an
        upgrade's request is made of them, not parsed a second time."""

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's are not subclasses of asyncio.Transport).
        self._transport = cast(asyncio.Transport, transport)
        services = self._services()
        peer = transport.get_extra_info("peername")
        if services is not None and (left := penalty.refusal(services, peer)) is not None:
            # The cheapest point: nothing is read or parsed.
            self._parser = None
            self._hold_refusal(services, left)
            return
        self._registry.connections.add(self)
        self._arm_deadline()

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:  # not tracking (a request httptools cannot parse): uvicorn answers
            self._forward(data)
            return
        if self._head is not None:
            self._head += data
        if self._in_head:
            self._head_bytes += len(data)
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._upgrade(len(data) - int(upgrade.args[0]))
            return
        except httptools.HttpParserError:
            if self._refusal is None:
                # Malformed HTTP: uvicorn's protocol parses it too and answers 400.
                self._parser = None
                self._to_http(data)
                return
        if self._refusal is None and self._in_head and self._head_bytes > MAX_HEAD_BYTES:
            self._refusal = (HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "headers too large")
        if self._refusal is not None:
            status, reason = self._refusal
            self._refuse(status, reason)
            return
        self._to_http(data)

    def eof_received(self) -> bool | None:
        if self._inner is not None:
            self._inner.eof_received()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        self._release_hold()
        self._registry.connections.discard(self)
        self._parser = None
        if self._inner is not None:
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def shutdown(self) -> None:
        """Graceful server stop, before a request was handed on: just close."""
        if self._transport is not None:
            self._transport.close()

    # -- the penalty box ------------------------------------------------------------------

    def _hold_refusal(self, services: Services, left: float) -> None:
        """Refuse a connection from a boxed address (``left``: seconds of its penalty left):
        hold it unread for up to :data:`~server.push.penalty.REFUSAL_HOLD_S`, then answer.

        An attacker that comes straight back after each refusal is slowed to one attempt
        per hold and connection, where an immediate answer let it make thousands a second
        (each an accept, a protocol object and a close); a held socket costs what an idle
        one does. A neighbour behind the same address waits the hold, then is told when to
        come back.
        """
        transport = self._transport
        box = penalty.box_of(services)
        assert transport is not None and box is not None
        hold = min(penalty.REFUSAL_HOLD_S, left)
        if box.holding >= penalty.MAX_HOLDING or hold <= 0:
            self._answer_refusal(left)
            return
        box.holding += 1
        self._holding = box
        transport.pause_reading()
        self._registry.connections.add(self)  # a graceful stop closes it at once
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(hold, self._answer_refusal, left - hold)

    def _answer_refusal(self, left: float) -> None:
        """``503`` with ``Retry-After`` (one write of a prepared head; the request, if it
        arrived, is never read), then close."""
        self._deadline = None
        self._release_hold()
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        wait = penalty.retry_after(left)
        transport.write(_PENALTY_HEADS.get(wait) or _penalty_head(wait))
        transport.close()

    def _release_hold(self) -> None:
        if self._holding is not None:
            self._holding.holding -= 1
            self._holding = None

    # -- httptools callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._target_bytes = self._headers = 0
        self._arm_deadline()

    def on_url(self, url: bytes) -> None:
        if self._head is not None:
            self._target += url
        self._target_bytes += len(url)
        if self._target_bytes > MAX_TARGET_BYTES:
            self._refusal = (HTTPStatus.REQUEST_URI_TOO_LONG, "uri too long")
            raise ValueError("request target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers += 1
        if self._headers > MAX_HEADERS or len(name) + len(value) > MAX_HEADER_LINE_BYTES:
            self._refusal = (HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "headers too large")
            raise ValueError("header fields too large")
        if self._head is not None:
            self._fields.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_read = True

    def on_message_complete(self) -> None:
        self._cancel_deadline()
        self._in_head = True  # what comes next is the head of the next request
        self._head_bytes = 0

    # -- HTTP ---------------------------------------------------------------------------

    def _to_http(self, data: bytes) -> None:
        """Hand the request to uvicorn's HTTP protocol once its head is read (with what was
        read so far), and feed it from then on."""
        if self._inner is not None:
            self._inner.data_received(data)
            return
        if not self._head_read and self._parser is not None:
            return  # the first head is not complete: it may still be an upgrade
        assert self._transport is not None and self._head is not None
        head, self._head = bytes(self._head), None
        self._target, self._fields = bytearray(), []  # only an upgrade needs them
        inner = HttpToolsProtocol(
            config=self._config, server_state=self._server_state, app_state=self._app_state
        )
        self._registry.connections.discard(self)  # uvicorn's protocol registers itself
        _bound_send_buffer(self._transport)
        inner.connection_made(self._transport)
        self._inner = inner
        inner.data_received(head)

    def _forward(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)

    def _arm_deadline(self) -> None:
        if self._deadline is None:
            timeout = self._settings_timeout()
            self._deadline = asyncio.get_running_loop().call_later(timeout, self._timed_out)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _settings_timeout(self) -> float:
        services = self._services()
        return 10.0 if services is None else services.settings.handshake_timeout_s

    def _timed_out(self) -> None:
        self._deadline = None
        if self._inner is None:
            self._refuse(HTTPStatus.REQUEST_TIMEOUT, "timeout")
            return
        self._count("timeout")
        if self._transport is not None:
            self._transport.close()

    def _refuse(self, status: HTTPStatus, reason: str) -> None:
        """Answer ``status`` with a short text, close, and count ``reason``."""
        self._cancel_deadline()
        self._parser = None
        self._count(reason)
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if self._inner is None:
            body = f"{status.phrase}\n".encode()
            response = Response(status.value, status.phrase, _headers(body), body)
            transport.write(response.serialize())
        transport.close()

    def _count(self, reason: str) -> None:
        """Count a refusal for ``reason``; abuse is reported to the penalty box."""
        services = self._services()
        if services is not None:
            services.metrics.handshake_rejects.labels(reason).inc()
            if self._transport is not None:
                penalty.report(services, self._transport, reason)

    def _services(self) -> Services | None:
        state = getattr(self._config.app, "state", None)
        services: Services | None = getattr(state, "services", None)
        return services

    # -- WebSocket ------------------------------------------------------------------------

    def _upgrade(self, past_head: int) -> None:
        """The request head asks for an upgrade; ``past_head``: bytes read beyond it."""
        self._cancel_deadline()
        parser, self._parser = self._parser, None
        if self._inner is not None or self._head is None or parser is None:
            self._refuse(HTTPStatus.BAD_REQUEST, "bad request")  # not the first request
            return
        if parser.get_http_version() != "1.1":
            self._refuse(HTTPStatus.BAD_REQUEST, "bad request")
            return
        head = bytes(self._head)
        cut = len(head) - past_head
        path = _target_path(head)
        if path in APP_WS_PATHS:
            # Not a device socket: uvicorn's HTTP protocol performs the upgrade for the app
            # (its ``ws`` setting), after the same deadline and size checks as any request.
            self._head_read = True
            self._to_http(b"")
            return
        self._head = None
        if parser.get_method() != b"GET" or _has_body(self._fields):
            self._refuse(HTTPStatus.BAD_REQUEST, "bad request")  # what websockets refuses
            return
        try:
            request = _request(self._target, self._fields)
        except (UnicodeDecodeError, InvalidHeader):
            self._refuse(HTTPStatus.BAD_REQUEST, "bad request")  # as websockets' parser would
            return
        self._target, self._fields = bytearray(), []
        self._open_websocket(_Upgrade(head[:cut], request, path in WS_PATHS), head[cut:])

    def _open_websocket(self, upgrade: _Upgrade, received: bytes) -> None:
        transport = self._transport
        services = self._services()
        assert transport is not None
        if services is None:
            self._refuse(HTTPStatus.SERVICE_UNAVAILABLE, "bad request")
            return
        admission = _admission(services) if upgrade.known else None
        key = device_key(upgrade.head) if admission is not None else None
        if admission is not None and (retry := admission.admit(services.clock(), key)) is not None:
            # Before anything costly (verifying the token, reading the state): the point is
            # to stay responsive while a fleet reconnects.
            self._try_later(transport, retry)
            return
        # One protocol for the handshake and the life of the connection, open from the
        # start: its frame parser never holds the request, and ``accept`` makes the answer
        # (written here, as ``send_response`` is for a protocol still connecting).
        ws = ServerProtocol(state=OPEN, max_size=MAX_MESSAGE_BYTES, logger=FRAME_LOG)
        if not upgrade.known:
            self._answer(ws.reject(HTTPStatus.NOT_FOUND, "Not Found\n"), "not found")
            return
        request = upgrade.request
        try:
            local = transport.get_extra_info("sockname")
            own = own_origins(services.settings.public_url, local if _is_inet(local) else None)
            principal = authenticate(request, services, own)
        except AuthError as exc:
            problem = auth_problem(exc)
            body = bytes(problem.body)
            headers = _headers(body, problem.media_type or "application/json")
            if "www-authenticate" in problem.headers:
                headers["WWW-Authenticate"] = problem.headers["www-authenticate"]
            status = HTTPStatus(problem.status_code)
            self._answer(Response(status.value, status.phrase, headers, body), type(exc).__name__)
            return
        response = ws.accept(request)
        if response.status_code != HTTPStatus.SWITCHING_PROTOCOLS:
            self._answer(response, "bad request")
            return
        # Bounded only now: a connection refused (most of a storm's) writes a few hundred bytes
        # and is closed, and the system call and socket wrapper would be for nothing.
        _bound_send_buffer(transport)
        transport.write(response.serialize())
        session = Session(principal, session_limits(services), services.clock())
        connection = Connection(transport, ws, session, services, self._registry)
        self._registry.connections.discard(self)
        transport.set_protocol(connection)
        connection.start(received)

    def _try_later(self, transport: asyncio.Transport, retry_after: int) -> None:
        """Refuse a handshake that admission control did not admit: 503 and ``Retry-After``
        (one write of a prepared answer), then close."""
        transport.write(_TRY_LATER.get(retry_after) or _try_later_answer(retry_after))
        self._count(ADMISSION_REFUSED)
        transport.close()

    def _answer(self, response: Response, reason: str) -> None:
        """Refuse an upgrade with ``response``, count ``reason``, close."""
        assert self._transport is not None
        self._count(reason)
        self._transport.write(response.serialize())
        self._transport.close()


@dataclass(frozen=True, slots=True)
class _Upgrade:
    """A WebSocket upgrade request, read: its head (for admission's :func:`device_key`), the
    request websockets checks, and whether its path is a device socket's."""

    head: bytes
    request: Request
    known: bool


def _bound_send_buffer(transport: asyncio.Transport) -> None:
    """Give the connection's socket the :data:`SEND_BUFFER_BYTES` kernel send buffer."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        except OSError:  # not a TCP socket: keep the default
            pass


def _has_body(fields: list[tuple[bytes, bytes]]) -> bool:
    """Whether header ``fields`` announce a body (a handshake has none)."""
    for name, value in fields:
        lowered = name.lower()
        if lowered == b"transfer-encoding" or (lowered == b"content-length" and value != b"0"):
            return True
    return False


def _request(target: bytearray, fields: list[tuple[bytes, bytes]]) -> Request:
    """The handshake request of a request ``target`` and header ``fields`` as httptools read
    them, decoded as websockets' own parser does (an ASCII target and names, values as
    ISO-8859-1). Raises :class:`UnicodeDecodeError` for a target or name that is not ASCII,
    :class:`~websockets.exceptions.InvalidHeader` for a value websockets refuses."""
    headers = Headers()
    for name, value in fields:
        headers[name.decode("ascii")] = value.decode("iso-8859-1")
    return Request(target.decode("ascii"), headers)


def _admission(services: Services) -> Admission:
    """The node's admission control, made on first use from the settings (one per app)."""
    found = services.parts.get(ADMISSION)
    if found is not None:
        return found
    settings = services.settings
    admission = Admission(settings.admit_rate, settings.admit_burst, services.clock())
    services.parts.add(ADMISSION, admission)
    return admission


def _try_later_answer(retry_after: int) -> bytes:
    """The whole answer to an upgrade admission control did not admit: 503, ``Retry-After``,
    no Date (optional on a 5xx) so that it can be made once per value."""
    body = b"try again later\n"
    return (
        "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n"
        f"Content-Length: {len(body)}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Retry-After: {retry_after}\r\n\r\n"
    ).encode() + body


_TRY_LATER: Final = {s: _try_later_answer(s) for s in range(MAX_RETRY_AFTER_S + 1)}


def _penalty_head(retry_after: int) -> bytes:
    """The whole answer to a connection from a boxed address: 503, ``Retry-After``, no Date
    (optional on a 5xx) so that it can be made once per value."""
    return (
        "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n"
        f"Retry-After: {retry_after}\r\n\r\n"
    ).encode()


_PENALTY_HEADS: Final = {s: _penalty_head(s) for s in range(1, MAX_RETRY_AFTER_S + 1)}


_date_cache: list[tuple[int, str]] = [(0, "")]


def _date() -> str:
    """The ``Date`` header of now, formatted once a second: a thousand slowloris sockets
    time out in the same turn of the loop, and formatting it costs ~5 µs each time."""
    now = int(time.time())
    second, text = _date_cache[0]
    if second != now:
        text = email.utils.formatdate(now, usegmt=True)
        _date_cache[0] = (now, text)
    return text


def _headers(body: bytes, content_type: str = "text/plain; charset=utf-8") -> Headers:
    return Headers(
        [
            ("Date", _date()),
            ("Connection", "close"),
            ("Content-Length", str(len(body))),
            ("Content-Type", content_type),
        ]
    )


def _target_path(head: bytes) -> str:
    """The path of the request target in a request head (``""`` if it has none)."""
    line = head.split(b"\r\n", 1)[0].split(b" ")
    target = line[1].decode("latin-1") if len(line) > 1 else ""
    return urlsplit(target).path


def _is_inet(address: object) -> bool:
    return isinstance(address, tuple) and len(address) >= 2 and isinstance(address[0], str)


ADMISSION: Final[PartKey[Admission]] = PartKey("admission")
"""Key of the node's :class:`Admission` in ``Services.parts``."""
