"""Errors as RFC 9457 problem details (``application/problem+json``), and their handlers.

A route raises :class:`HTTPProblem` (or lets a :class:`~server.errors.StoreError` or an
:class:`~server.errors.AuthError` escape); the exception handlers that
:data:`EXCEPTION_HANDLERS` names, registered once on the app, turn each into its answer.
So no route catches and re-wraps errors itself, every error of the HTTP API has the same
shape, including Starlette's own 404 and 405, and each is counted once, by status, in
``companion_http_errors``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Any, Final

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from server.errors import AuthError, Forbidden, StoreError, TokenExpired

CONTENT_TYPE: Final = "application/problem+json"
STORE_RETRY_AFTER_S: Final = 5
"""What ``Retry-After`` says while the store is unreachable: a few seconds, so a watch
comes back soon without hammering a store that is restarting."""


def problem(
    status: int, detail: str, headers: Mapping[str, str] | None = None, **extra: Any
) -> Response:
    """A problem response: ``type`` about:blank, the status's title, ``detail``, extras."""
    body = {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status}
    body["detail"] = detail
    body.update(extra)
    all_headers = dict(headers or {})
    if status == 401:
        all_headers["WWW-Authenticate"] = 'Bearer realm="companion"'
    return Response(
        orjson.dumps(body), status_code=status, media_type=CONTENT_TYPE, headers=all_headers
    )


class HTTPProblem(Exception):
    """Raised inside a route to answer with a problem: ``status``, ``detail``, extra members
    of the problem document and extra response headers (e.g. ``Retry-After``)."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = extra

    def response(self) -> Response:
        """The problem response this exception stands for."""
        return problem(self.status, self.detail, self.headers, **self.extra)


def auth_problem(error: AuthError) -> Response:
    """The problem response for an authentication (401) or authorisation (403) failure."""
    if isinstance(error, Forbidden):
        return problem(403, str(error))
    code = "token_expired" if isinstance(error, TokenExpired) else "unauthorized"
    return problem(401, str(error), code=code)


def _counted(request: Request, response: Response) -> Response:
    # companion_http_errors{status}: the label is a status our code chose, never client text.
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.http_errors.labels(str(response.status_code)).inc()
    return response


async def on_problem(request: Request, exc: Exception) -> Response:
    """Handler of :class:`HTTPProblem`."""
    assert isinstance(exc, HTTPProblem)
    return _counted(request, exc.response())


async def on_auth_error(request: Request, exc: Exception) -> Response:
    """Handler of :class:`AuthError`: 401 or 403."""
    assert isinstance(exc, AuthError)
    return _counted(request, auth_problem(exc))


async def on_store_error(request: Request, exc: Exception) -> Response:
    """Handler of :class:`StoreError`: 503 with ``Retry-After``, the store's words withheld
    (they may name tables, hosts or keys)."""
    answer = problem(
        503, "the store is unavailable; retry later", {"Retry-After": str(STORE_RETRY_AFTER_S)}
    )
    return _counted(request, answer)


async def on_http_exception(request: Request, exc: Exception) -> Response:
    """Handler of Starlette's :class:`HTTPException` (unknown path 404, method 405 …)."""
    assert isinstance(exc, HTTPException)
    if exc.status_code in (204, 304):
        return Response(status_code=exc.status_code, headers=exc.headers)
    return _counted(request, problem(exc.status_code, str(exc.detail), exc.headers))


Handler = Callable[[Request, Exception], Awaitable[Response]]

EXCEPTION_HANDLERS: Final[Mapping[Any, Handler]] = {
    HTTPProblem: on_problem,
    AuthError: on_auth_error,
    StoreError: on_store_error,
    HTTPException: on_http_exception,
}
"""The app's exception handlers (``Starlette(exception_handlers=…)``), registered once."""
