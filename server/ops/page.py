"""The fleet page: ``/ops``, its static files, and ``/ops/ws``, the live feed.

The page (HTML, JavaScript, CSS; no build step, no CDN) lives with the other clients in
``clients/ops/``; the server hands those files out, located with
:func:`importlib.resources.files` (package data, no client code imported). Only plain file
names of that directory are served. Every answer says ``Cache-Control: no-cache`` and
``Referrer-Policy: no-referrer``: the page carries its token in the query string.

``/ops/ws`` takes an *operator* token and the Origin allow-list of the device socket. The
page sends its token as a WebSocket subprotocol (``companion.ops`` and ``bearer.<token>``),
because the server logs the path and query of every WebSocket handshake and a token must
never be logged; tools may send ``Authorization: Bearer`` (or ``?token=``, which is logged).
The server then sends the fleet view as a JSON text message
once a second until the peer leaves or the token expires (closed with 4001). Every send has
the write deadline of the device sockets; a peer that does not read in time is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any, Final

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from server.auth import LEEWAY_S, bearer, origin_allowed, own_origins, verify
from server.errors import AuthError, Forbidden
from server.etag import none_match
from server.ops.stage import OPS, OpsNode
from server.problems import problem
from server.services import Services

CONTENT_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_POLICY: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'"
)
VIEW_WAIT_S: Final = 5.0
"""How long the feed waits for the next view before it resends the last one."""
PROTOCOL: Final = "companion.ops"
TOKEN_PROTOCOL: Final = "bearer."
"""Prefix of the subprotocol that carries the page's token (JWTs are valid protocol names)."""
CLOSE_POLICY: Final = 1008
CLOSE_TOKEN_EXPIRED: Final = 4001


def directory() -> Traversable:
    """Where the page's files are: ``clients/ops`` of the installed ``clients`` package."""
    return files("clients") / "ops"


def _file(request: Request, name: str) -> Response:
    suffix = name[name.rfind(".") :] if "." in name else ""
    content_type = CONTENT_TYPES.get(suffix)
    resource = directory() / name
    if content_type is None or not _NAME.match(name) or not resource.is_file():
        return problem(404, f"no ops file {name[:64]!r}")
    body = resource.read_bytes()
    etag = f'"{hashlib.sha256(body).hexdigest()[:16]}"'
    headers = {
        "Cache-Control": "no-cache",
        "ETag": etag,
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
    }
    if suffix == ".html":
        headers["Content-Security-Policy"] = _POLICY
    if none_match(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return Response(body, headers=headers, media_type=content_type)


async def index(request: Request) -> Response:
    """``GET /ops``: the page (it reads its operator token from ``?token=``)."""
    return _file(request, "index.html")


async def static(request: Request) -> Response:
    """``GET /ops/static/{name}``: the page's script and style sheet."""
    return _file(request, str(request.path_params["name"]))


async def feed(websocket: WebSocket) -> None:
    """``/ops/ws``: the fleet view, once a second, to an operator's page."""
    services: Services | None = getattr(websocket.app.state, "services", None)
    node = None if services is None else services.parts.get(OPS)
    if services is None or not isinstance(node, OpsNode):
        await websocket.send_denial_response(problem(503, "starting"))
        return
    settings = services.settings
    offered: list[str] = list(websocket.scope.get("subprotocols", []))
    token = (
        bearer(websocket.headers.get("authorization"))
        or next((p[len(TOKEN_PROTOCOL) :] for p in offered if p.startswith(TOKEN_PROTOCOL)), None)
        or websocket.query_params.get("token")
    )
    try:
        principal = verify(token, settings.secret, now_s=int(services.clock()), operator=True)
        origin = websocket.headers.get("origin")
        server = websocket.scope.get("server")  # the socket's own address, never a header
        own = own_origins(settings.public_url, tuple(server) if server else None)
        if not origin_allowed(origin, own, settings.allowed_origins):
            raise Forbidden("origin not allowed")
    except AuthError as exc:
        services.metrics.handshake_rejects.labels(type(exc).__name__).inc()
        await websocket.send_denial_response(problem(exc.status, str(exc)))
        return
    # A browser that offered subprotocols drops a connection that does not choose one.
    await websocket.accept(subprotocol=PROTOCOL if PROTOCOL in offered else None)
    reader = asyncio.create_task(_until_closed(websocket), name="ops-feed-reader")
    sender = asyncio.create_task(
        _send_views(websocket, node, principal.expires_at + LEEWAY_S, settings.write_timeout),
        name="ops-feed-sender",
    )
    try:
        await asyncio.wait({reader, sender}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (reader, sender):
            task.cancel()
        for task in (reader, sender):
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, OSError):
                await task


async def _until_closed(websocket: WebSocket) -> None:
    """Read (and ignore) what the page sends, until it goes."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return


async def _send_views(
    websocket: WebSocket, node: OpsNode, expires_at: int, write_timeout: float
) -> None:
    seen = 0
    services = node.services
    while True:
        if services.clock() > expires_at:
            await websocket.close(CLOSE_TOKEN_EXPIRED, "token expired")
            return
        try:
            seen, view = await node.next_view(seen, VIEW_WAIT_S)
        except TimeoutError:
            view = node.view  # the loop is backing off: resend what we have
        try:
            async with asyncio.timeout(write_timeout):
                await websocket.send_text(orjson.dumps(view).decode())
        except TimeoutError:
            await websocket.close(CLOSE_POLICY, "slow consumer")
            return


def ops_openapi_paths() -> dict[str, Any]:
    """The fleet page's entries of the OpenAPI document (the WebSocket is described in
    docs/operations.md: OpenAPI has no WebSockets)."""
    html = {"200": {"description": "HTML"}}
    return {
        "/ops": {"get": {"summary": "Fleet page (operator token in ?token=)", "responses": html}},
        "/ops/static/{name}": {
            "get": {
                "summary": "Fleet page assets",
                "parameters": [
                    {"in": "path", "name": "name", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {"200": {"description": "the file"}, "404": {"description": "none"}},
            }
        },
    }


def ops_routes() -> list[BaseRoute]:
    """The routes of the fleet page."""
    return [
        Route("/ops", index, methods=["GET"]),
        Route("/ops/static/{name}", static, methods=["GET"]),
        WebSocketRoute("/ops/ws", feed),
    ]
