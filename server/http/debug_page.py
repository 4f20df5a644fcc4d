"""The browser debug client: ``/debug`` and ``/debug/static/{name}``.

The page itself (HTML, JavaScript, CSS, no build step and no CDN) lives with the other
clients in ``clients/debug/``; the server only hands those files out with Starlette's
:class:`~starlette.staticfiles.StaticFiles`, located by package (``clients``, ``debug``)
so they are found in a checkout and in an installed wheel alike. This reads package data,
it imports no client code. StaticFiles refuses paths that climb out of the directory.

Every answer says ``Cache-Control: no-cache`` (a redeployed page is picked up at once,
revalidated by ``ETag`` with the server's one ``If-None-Match`` matcher) and
``Referrer-Policy: no-referrer``, because the page carries its token in the query string
and must not leak it to image hosts. The HTML carries a strict Content-Security-Policy.
"""

from __future__ import annotations

from typing import Final

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from server.etag import none_match

PACKAGE: Final = ("clients", "debug")
_POLICY: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src * data: blob:; "
    "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'"
)
_HEADERS: Final = {
    "Cache-Control": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


class DebugFiles(StaticFiles):
    """StaticFiles with the page's headers and the server's ``If-None-Match`` matcher."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        """The file at ``path`` with the debug page's headers (404 problem if absent)."""
        response = await super().get_response(path, scope)
        response.headers.update(_HEADERS)
        if response.headers.get("content-type", "").startswith("text/html"):
            response.headers["Content-Security-Policy"] = _POLICY
        return response

    def is_not_modified(self, response_headers: Headers, request_headers: Headers) -> bool:
        """Whether the browser's copy is current: by ``If-None-Match`` when sent (RFC 9110
        then ignores ``If-Modified-Since``), else by date as StaticFiles does."""
        if_none_match = request_headers.get("if-none-match")
        if if_none_match is not None:
            return none_match(if_none_match, response_headers["etag"])
        return super().is_not_modified(response_headers, request_headers)


def debug_routes() -> list[BaseRoute]:
    """The routes of the debug page: ``/debug`` and the files under ``/debug/static``."""
    files = DebugFiles(packages=[PACKAGE])

    async def index(request: Request) -> Response:
        """``GET /debug``: the page (it reads its token from ``?token=``)."""
        return await files.get_response("index.html", request.scope)

    return [
        Route("/debug", index, methods=["GET"]),
        Mount("/debug/static", app=files, name="debug-static"),
    ]
