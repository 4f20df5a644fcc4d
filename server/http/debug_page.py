"""The browser debug client: ``/debug`` and ``/debug/static/{name}``.

The page itself (HTML, JavaScript, CSS, no build step and no CDN) lives with the other
clients in ``clients/debug/``; the server only hands those files out, located with
:func:`importlib.resources.files` so they are found in a checkout and in an installed wheel
alike. This reads package data, it imports no client code.

Every answer says ``Cache-Control: no-cache`` (a redeployed page is picked up at once,
revalidated by ``ETag``) and ``Referrer-Policy: no-referrer``, because the page carries
its token in the query string and must not leak it to image hosts. Only plain file names
of that directory are served, so no path can climb out of it.
"""

from __future__ import annotations

import hashlib
import re
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from server.problems import problem

CONTENT_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_POLICY: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src * data: blob:; "
    "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'"
)


def directory() -> Traversable:
    """Where the page's files are: ``clients/debug`` of the installed ``clients`` package."""
    return files("clients") / "debug"


def _file(request: Request, name: str) -> Response:
    suffix = name[name.rfind(".") :] if "." in name else ""
    content_type = CONTENT_TYPES.get(suffix)
    resource = directory() / name
    if content_type is None or not _NAME.match(name) or not resource.is_file():
        return problem(404, f"no debug file {name[:64]!r}")
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
    if etag in (request.headers.get("if-none-match") or ""):
        return Response(status_code=304, headers=headers)
    return Response(body, headers=headers, media_type=content_type)


async def index(request: Request) -> Response:
    """``GET /debug``: the page (it reads its token from ``?token=``)."""
    return _file(request, "index.html")


async def static(request: Request) -> Response:
    """``GET /debug/static/{name}``: the page's script, style sheet and pictures."""
    return _file(request, str(request.path_params["name"]))


def debug_routes() -> list[BaseRoute]:
    """The routes of the debug page."""
    return [
        Route("/debug", index, methods=["GET"]),
        Route("/debug/static/{name}", static, methods=["GET"]),
    ]
