"""REST routes of API v1: upload (piggyback), state with ETag and long-poll, export, erase.

Every route authenticates with the same device tokens as the WebSocket (``Authorization:
Bearer`` or ``?token=``) and checks that the caller may touch the user in the path. Errors
are RFC 9457 problem details.
"""

from __future__ import annotations

from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response

from server import protocol as wire
from server.auth import DeviceKind, Principal
from server.errors import FramesNotDurable, StoreError
from server.etag import none_match
from server.history import HistoryReader
from server.http.access import (
    authorize,
    json as json,  # re-exported: app.py answers with it
    read_json,
    services_of,
)
from server.http.devices_routes import exported, note_rest_seen, rest_device
from server.problems import HTTPProblem
from server.protocol import FrameLimits
from server.push.endpoint import SERVICE_MAX_AGE_MS
from server.store.base import UserState
from server.store.codec import state_fields
from server.store.history_codec import event_to_dict

MAX_WAIT_S: Final = 60.0
DATA_OWNERS: Final = frozenset({DeviceKind.PHONE, DeviceKind.SERVICE})
"""Who may export or erase a user: the user's phone (the app the person holds) or a
service. A watch or the debug page only shows the state; they may not take it away."""


def etag_of(state: UserState) -> str:
    """The state's ``ETag``: its hash, quoted."""
    return f'"{state.state_hash}"'


async def ingest_frames(
    request: Request, principal: Principal, user_id: str, raw_frames: Any
) -> tuple[int, tuple[wire.Rejection, ...]]:
    """Validate and store frames for ``user_id``; return (accepted, rejections).

    Raises :class:`HTTPProblem`: 400 for a body that is not a list of frames, 413 for too
    many frames, 422 when every frame is invalid, 503 when not durable.
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
        raise HTTPProblem(413 if exc.code == "too_big" else 400, exc.message) from None
    for rejection in rejected:  # the counter maps any field outside its fixed set to "other"
        services.metrics.frames_rejected.labels(rejection.field).inc()
    if not frames and rejected:
        raise HTTPProblem(422, "no valid frame", rejected=[rejection_dict(r) for r in rejected])
    try:
        await services.ingestor.submit(user_id, frames)
    except (FramesNotDurable, StoreError):
        raise HTTPProblem(
            503, "frames not stored; send them again", headers={"Retry-After": "1"}
        ) from None
    services.metrics.frames_accepted.labels("rest").inc(len(frames))
    return len(frames), rejected


def rejection_dict(r: wire.Rejection) -> dict[str, Any]:
    """A rejected frame as the answer lists it: ``{index, field, reason}``."""
    return {"index": r.index, "field": r.field, "reason": r.reason}


async def post_frames(request: Request) -> Response:
    """``POST /v1/users/{id}/frames``: store frames; the answer carries the current state
    version and hash, so an upload doubles as a poll."""
    user_id = request.path_params["user_id"]
    principal = authorize(request, user_id)
    body = await read_json(request)
    raw = body.get("frames") if isinstance(body, dict) else body
    accepted, rejected = await ingest_frames(request, principal, user_id, raw)
    state = await services_of(request).state.current(user_id)
    return json(
        {
            "accepted": accepted,
            "rejected": [rejection_dict(r) for r in rejected],
            "version": state.version,
            "state_hash": state.state_hash,
        },
        headers={"ETag": etag_of(state)},
    )


async def get_state(request: Request) -> Response:
    """``GET /v1/users/{id}/state``: ETag is the state hash; ``If-None-Match`` → 304;
    ``?wait=S`` holds the request until the state changes or S seconds (≤ 60) pass."""
    user_id = request.path_params["user_id"]
    principal = authorize(request, user_id)
    wait = _wait_seconds(request)
    since = _since(request)
    rest_device(request, principal)  # a malformed ?device= is a 400 before any wait
    services = services_of(request)
    if_none_match = request.headers.get("if-none-match")
    if wait <= 0:
        state = await services.state.current(user_id)
        note_rest_seen(request, principal, state, if_none_match)
    else:
        async with services.hub.watch(user_id) as watch:
            state = await services.state.current(user_id)
            note_rest_seen(request, principal, state, if_none_match)
            # Hold while the client already has this state: by version (?since=) or by hash.
            if since is not None:
                unchanged = state.version <= since
            else:
                unchanged = none_match(if_none_match, etag_of(state))
            if unchanged and await watch.wait_beyond(state.version, wait):
                state = await services.state.current(user_id)
    etag = etag_of(state)
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if none_match(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    return json(state_fields(state), headers=headers)


def _since(request: Request) -> int | None:
    raw = request.query_params.get("since")
    if raw is None:
        return None
    if not raw.isdigit() or not raw.isascii() or len(raw) > 18:
        raise HTTPProblem(400, "since must be a version number")
    return int(raw)


def _wait_seconds(request: Request) -> float:
    raw = request.query_params.get("wait")
    if raw is None:
        return 0.0
    try:
        wait = float(raw)
    except ValueError:
        raise HTTPProblem(400, "wait must be a number of seconds") from None
    if not 0 <= wait <= MAX_WAIT_S:  # also refuses nan
        raise HTTPProblem(400, f"wait must be between 0 and {MAX_WAIT_S:g} seconds")
    return wait


async def export_user(request: Request) -> Response:
    """``GET /v1/users/{id}/export``: everything stored about the user (GDPR access), the
    decision history (``history``, oldest first) included; phone or service tokens only."""
    user_id = request.path_params["user_id"]
    authorize(request, user_id, DATA_OWNERS)
    services = services_of(request)
    data = await services.store.export_user(user_id, now_ms=services.now_ms())
    history = await HistoryReader(services.store, services.clock).everything(user_id)
    data["history"] = [event_to_dict(event) for event in history]
    data.update(await exported(services, user_id))
    return json(data, headers={"Content-Disposition": f'attachment; filename="{user_id}.json"'})


async def delete_user(request: Request) -> Response:
    """``DELETE /v1/users/{id}``: erase the user's frames, state, usage and decision
    history (GDPR erasure), and push the blank state that follows to the user's devices;
    phone or service tokens only."""
    user_id = request.path_params["user_id"]
    authorize(request, user_id, DATA_OWNERS)
    services = services_of(request)
    # Before: work in flight for the user stops committing. After: what it cached meanwhile
    # goes too.
    for forget in services.erase_hooks:
        forget(user_id)
    deleted = await services.store.delete_user(user_id, at_ms=services.now_ms())
    # After the state: a history write racing the erase finds no state and keeps nothing
    # (server.store.dynamodb_history), or lands before this and is deleted here.
    deleted += await services.store.delete_history(user_id)
    for forget in services.erase_hooks:
        forget(user_id)
    # Devices of the user, on every node, learn of the erase as any change: the blank state,
    # a version on (docs/protocol.md, "Erase"). Never raises: a broker that does not take it
    # now re-publishes the current state when it is back.
    # Its time is the erase's: the tombstone keeps it, and the blank state dates from it
    # (a re-publish after a broker outage too).
    blank = await services.state.current_delta(user_id)
    if blank is not None:
        await services.hub.publish_delta(blank)
    return json({"user_id": user_id, "deleted": deleted})
