"""REST routes of API v1: upload (piggyback), state with ETag and long-poll, export, erase.

Every route authenticates with the same device tokens as the WebSocket (``Authorization:
Bearer`` or ``?token=``) and checks that the caller may touch the user in the path. Errors
are RFC 9457 problem details.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from server import protocol as wire
from server.auth import DeviceKind, Principal, bearer, verify
from server.errors import AuthError, FramesNotDurable, StoreError
from server.problems import auth_problem, problem
from server.protocol import FrameLimits
from server.push.endpoint import SERVICE_MAX_AGE_MS, snapshot_fields
from server.services import Services
from server.store.base import UserState

MAX_BODY_BYTES = 1024 * 1024
MAX_WAIT_S = 60.0


class HTTPProblem(Exception):
    """Raised inside a route to answer with a problem response."""

    def __init__(self, response: Response) -> None:
        self.response = response


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def authorize(request: Request, user_id: str | None) -> Principal:
    """The caller's principal, allowed to touch ``user_id``. Raises :class:`HTTPProblem`."""
    services = services_of(request)
    token = bearer(request.headers.get("authorization")) or request.query_params.get("token")
    try:
        principal = verify(token, services.settings.secret, now_s=int(services.clock()))
        if user_id is not None:
            if not wire.valid_user_id(user_id):
                raise HTTPProblem(problem(404, f"no user {user_id[:64]!r}"))
            principal.require(user_id)
    except AuthError as exc:
        raise HTTPProblem(auth_problem(exc)) from None
    return principal


async def read_json(request: Request) -> Any:
    """The request's JSON body (at most 1 MiB). Raises :class:`HTTPProblem` (400, 413)."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise HTTPProblem(problem(413, f"body over {MAX_BODY_BYTES} bytes"))
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise HTTPProblem(problem(413, f"body over {MAX_BODY_BYTES} bytes"))
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HTTPProblem(problem(400, f"body is not JSON: {exc}")) from None


def json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status, headers, media_type="application/json")


def etag_of(state: UserState) -> str:
    return f'"{state.state_hash}"'


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
    return "*" in tags or etag in tags


async def ingest_frames(
    request: Request, principal: Principal, user_id: str, raw_frames: Any
) -> tuple[int, tuple[wire.Rejection, ...]]:
    """Validate and store frames for ``user_id``; return (accepted, rejections).

    Raises :class:`HTTPProblem`: 422 when every frame is invalid, 503 when not durable.
    """
    services = services_of(request)
    max_age = (
        SERVICE_MAX_AGE_MS
        if principal.device is DeviceKind.SERVICE
        else services.settings.max_frame_age_s * 1000
    )
    try:
        frames, rejected = wire.parse_frames(
            raw_frames, now_ms=services.now_ms(), limits=FrameLimits(max_age_ms=max_age)
        )
    except wire.ProtocolError as exc:
        status = 413 if exc.code == "too_big" else 400
        raise HTTPProblem(problem(status, exc.message)) from None
    for rejection in rejected:
        services.metrics.frames_rejected.labels(rejection.field).inc()
    if not frames and rejected:
        raise HTTPProblem(
            problem(422, "no valid frame", rejected=[_rejection(r) for r in rejected])
        )
    try:
        await services.ingestor.submit(user_id, frames)
    except (FramesNotDurable, StoreError):
        raise HTTPProblem(problem(503, "frames not stored; send them again")) from None
    services.metrics.frames_accepted.labels("rest").inc(len(frames))
    return len(frames), rejected


def _rejection(r: wire.Rejection) -> dict[str, Any]:
    return {"index": r.index, "field": r.field, "reason": r.reason}


async def post_frames(request: Request) -> Response:
    """``POST /v1/users/{id}/frames``: store frames; the answer carries the current state
    version and hash, so an upload doubles as a poll."""
    user_id = request.path_params["user_id"]
    try:
        principal = authorize(request, user_id)
        body = await read_json(request)
        raw = body.get("frames") if isinstance(body, dict) else body
        accepted, rejected = await ingest_frames(request, principal, user_id, raw)
    except HTTPProblem as exc:
        return exc.response
    state = await services_of(request).state.current(user_id)
    return json(
        {
            "accepted": accepted,
            "rejected": [_rejection(r) for r in rejected],
            "version": state.version,
            "state_hash": state.state_hash,
        },
        headers={"ETag": etag_of(state)},
    )


async def get_state(request: Request) -> Response:
    """``GET /v1/users/{id}/state``: ETag is the state hash; ``If-None-Match`` → 304;
    ``?wait=S`` holds the request until the state changes or S seconds (≤ 60) pass."""
    user_id = request.path_params["user_id"]
    try:
        authorize(request, user_id)
        wait = _wait_seconds(request)
        _since(request)
    except HTTPProblem as exc:
        return exc.response
    services = services_of(request)
    if_none_match = request.headers.get("if-none-match")
    since = _since(request)
    if wait <= 0:
        state = await services.state.current(user_id)
    else:
        async with services.hub.watch(user_id) as watch:
            state = await services.state.current(user_id)
            # Hold while the client already has this state: by version (?since=) or by hash.
            unchanged = state.version <= since if since is not None else None
            if unchanged is None:
                unchanged = _matches(if_none_match, etag_of(state))
            if unchanged and await watch.wait_beyond(state.version, wait):
                state = await services.state.current(user_id)
    etag = etag_of(state)
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if _matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    return json(snapshot_fields(state), headers=headers)


def _since(request: Request) -> int | None:
    raw = request.query_params.get("since")
    if raw is None:
        return None
    if not raw.isdigit():
        raise HTTPProblem(problem(400, f"since must be a version number, got {raw!r}"))
    return int(raw)


def _wait_seconds(request: Request) -> float:
    raw = request.query_params.get("wait")
    if raw is None:
        return 0.0
    try:
        wait = float(raw)
    except ValueError:
        raise HTTPProblem(problem(400, f"wait must be a number of seconds, got {raw!r}")) from None
    if not 0 <= wait <= MAX_WAIT_S:
        raise HTTPProblem(problem(400, f"wait must be between 0 and {MAX_WAIT_S:g} seconds"))
    return wait


async def export_user(request: Request) -> Response:
    """``GET /v1/users/{id}/export``: everything stored about the user (GDPR access)."""
    user_id = request.path_params["user_id"]
    try:
        authorize(request, user_id)
    except HTTPProblem as exc:
        return exc.response
    services = services_of(request)
    data = await services.store.export_user(user_id, now_ms=services.now_ms())
    return json(data, headers={"Content-Disposition": f'attachment; filename="{user_id}.json"'})


async def delete_user(request: Request) -> Response:
    """``DELETE /v1/users/{id}``: erase the user's frames, state and usage (GDPR erasure)."""
    user_id = request.path_params["user_id"]
    try:
        authorize(request, user_id)
    except HTTPProblem as exc:
        return exc.response
    services = services_of(request)
    # Before: work in flight for the user stops committing. After: what it cached meanwhile
    # goes too.
    for forget in services.erase_hooks:
        forget(user_id)
    deleted = await services.store.delete_user(user_id)
    for forget in services.erase_hooks:
        forget(user_id)
    return json({"user_id": user_id, "deleted": deleted})
