"""``GET /v1/users/{id}/history``: a user's decision history, newest first, in pages.

The query side of :mod:`server.history`: it reads events only, never the current state.
Any device of the user (phone, watch, debug page) or a service may read it; an operator
token may not (fleet figures only). Parameters, all optional:

- ``limit``: events per page, 1..100 (default 20);
- ``before``: only events older than this — a version number, or an RFC 3339 time with a
  zone (``2026-11-30T15:00:00Z``: events committed before that instant);
- ``since``: only events newer than this — a version number (exclusive), or a time
  (events committed at or after it).

The answer is ``{user_id, events: [...], next_before}``; ``next_before`` is the version to
pass as ``before`` for the next, older page (``null`` at the end). The state at a moment is
``?before=<that time>&limit=1``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from starlette.requests import Request
from starlette.responses import Response

from server.auth import DeviceKind
from server.history import MAX_PAGE, HistoryReader
from server.http.access import authorize, json, services_of
from server.problems import HTTPProblem
from server.store.base import HistoryQuery
from server.store.history_codec import event_to_dict

DEFAULT_LIMIT: Final = 20
READERS: Final = frozenset(
    {DeviceKind.PHONE, DeviceKind.WATCH, DeviceKind.DEBUG, DeviceKind.SERVICE}
)
"""Who may read a user's history: the user's own devices, or a service."""
_MAX_BOUND_CHARS: Final = 40
_MAX_VERSION_DIGITS: Final = 18
"""Digits of a version bound: an integer SQLite (and DynamoDB's sort key range) can hold."""
_BOUND_HELP: Final = "a version number or an RFC 3339 time with a zone, like 2026-11-30T15:00:00Z"


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isascii() or not raw.isdigit() or len(raw) > 4 or not 1 <= int(raw) <= MAX_PAGE:
        raise HTTPProblem(400, f"limit must be a whole number 1..{MAX_PAGE}")
    return int(raw)


def _bound(request: Request, name: str) -> tuple[int | None, int | None]:
    """The ``(version, epoch ms)`` a bound parameter names (one of them, or neither).

    Raises :class:`HTTPProblem` 400 for a value that is neither.
    """
    raw = request.query_params.get(name)
    if raw is None:
        return None, None
    if not raw.isascii() or not raw or len(raw) > _MAX_BOUND_CHARS:
        raise HTTPProblem(400, f"{name} must be {_BOUND_HELP}")
    if raw.isdigit():
        if len(raw) > _MAX_VERSION_DIGITS:
            raise HTTPProblem(400, f"{name}: a version has at most {_MAX_VERSION_DIGITS} digits")
        return int(raw), None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise HTTPProblem(400, f"{name} must be {_BOUND_HELP}") from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise HTTPProblem(400, f"{name}: a time needs a zone (Z or ±hh:mm)")
    return None, round(moment.timestamp() * 1000)


async def get_history(request: Request) -> Response:
    """``GET /v1/users/{id}/history``: a page of the user's decision history, newest first.

    Raises :class:`HTTPProblem` 400 for a bad ``limit``, ``before`` or ``since`` (after the
    token and user checks of :func:`~server.http.access.authorize`).
    """
    user_id = request.path_params["user_id"]
    authorize(request, user_id, READERS)
    before_version, before_ms = _bound(request, "before")
    since_version, since_ms = _bound(request, "since")
    query = HistoryQuery(
        limit=_limit(request),
        before_version=before_version,
        since_version=since_version,
        before_ms=before_ms,
        since_ms=since_ms,
    )
    services = services_of(request)
    page = await HistoryReader(services.store, services.clock).page(user_id, query)
    return json(
        {
            "user_id": page.user_id,
            "events": [event_to_dict(event) for event in page.events],
            "next_before": page.next_before,
        },
        headers={"Cache-Control": "no-cache"},
    )
