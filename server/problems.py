"""Errors as RFC 9457 problem details (``application/problem+json``)."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import orjson
from starlette.responses import Response

from server.errors import AuthError, Forbidden, TokenExpired

CONTENT_TYPE = "application/problem+json"


def problem(status: int, detail: str, **extra: Any) -> Response:
    """A problem response: ``type`` about:blank, the status's title, ``detail``, extras."""
    body = {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status}
    body["detail"] = detail
    body.update(extra)
    headers = {"WWW-Authenticate": 'Bearer realm="companion"'} if status == 401 else None
    return Response(
        orjson.dumps(body), status_code=status, media_type=CONTENT_TYPE, headers=headers
    )


def auth_problem(error: AuthError) -> Response:
    """The problem response for an authentication or authorisation failure."""
    if isinstance(error, Forbidden):
        return problem(403, str(error))
    code = "token_expired" if isinstance(error, TokenExpired) else "unauthorized"
    return problem(401, str(error), code=code)
