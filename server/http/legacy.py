"""The polling API that watches in the field still call, on top of the new core.

- ``POST /sensor-data`` — ``{user_id, heart_rate?, hrv?, steps?, spo2?, skin_temp?,
  timestamp?}`` or ``{user_id, readings: [...]}``; one reading or several.
- ``POST /api/v1/user/{id}/data`` — the same body without ``user_id``.
- ``GET /avatar/current-state/{user_id}`` — ``{state_hash, timestamp, image_url, mood}``.
- ``GET /api/v1/user/{id}/state`` — the state with the old field names.

Old readings name fields ``heart_rate`` and ``timestamp`` (seconds or milliseconds); they
are translated to v1 frames and go through the same validation and ingest path, so a bad
reading is rejected with its field and reason exactly as on the new API.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from server.http.rest import HTTPProblem, authorize, ingest_frames, json, read_json, services_of
from server.store.base import UserState

_RENAMES = {"heart_rate": "hr", "timestamp": "ts", "skin_temperature": "skin_temp"}
_SECONDS_BEFORE = 10**11
"""Timestamps below this are seconds (the old watches sent seconds), above it milliseconds."""


def _to_frame(reading: Any, now_ms: int) -> Any:
    if not isinstance(reading, dict):
        return reading  # validation reports it
    frame = {_RENAMES.get(k, k): v for k, v in reading.items() if k != "user_id"}
    ts = frame.get("ts")
    if ts is None:
        frame["ts"] = now_ms
    elif isinstance(ts, int | float) and not isinstance(ts, bool) and ts < _SECONDS_BEFORE:
        frame["ts"] = int(ts * 1000)
    frame.setdefault("device", "legacy-watch")
    return frame


async def _ingest(request: Request, user_id: str | None, body: Any) -> Response:
    if not isinstance(body, dict):
        raise HTTPProblem(json({"error": "body must be a JSON object"}, 400))
    user_id = user_id or body.get("user_id")
    if not isinstance(user_id, str):
        raise HTTPProblem(json({"error": "user_id is required"}, 400))
    principal = authorize(request, user_id)
    services = services_of(request)
    readings = body.get("readings")
    if readings is None:
        readings = [{k: v for k, v in body.items() if k != "user_id"}]
    if not isinstance(readings, list):
        raise HTTPProblem(json({"error": "readings must be a list"}, 400))
    now_ms = services.now_ms()
    frames = [_to_frame(r, now_ms) for r in readings]
    accepted, rejected = await ingest_frames(request, principal, user_id, frames)
    state = await services.state.current(user_id)
    return json(
        {
            "status": "ok",
            "accepted": accepted,
            "rejected": [
                {"index": r.index, "field": r.field, "reason": r.reason} for r in rejected
            ],
            **_old_state(state),
        }
    )


def _old_state(state: UserState) -> dict[str, Any]:
    return {
        "state_hash": state.state_hash,
        "timestamp": state.updated_at // 1000,
        "image_url": state.image_url,
        "mood": state.mood,
    }


async def sensor_data(request: Request) -> Response:
    """``POST /sensor-data``."""
    try:
        return await _ingest(request, None, await read_json(request))
    except HTTPProblem as exc:
        return exc.response


async def user_data(request: Request) -> Response:
    """``POST /api/v1/user/{user_id}/data``."""
    try:
        return await _ingest(request, request.path_params["user_id"], await read_json(request))
    except HTTPProblem as exc:
        return exc.response


async def avatar_current_state(request: Request) -> Response:
    """``GET /avatar/current-state/{user_id}`` → ``{state_hash, timestamp, image_url, mood}``."""
    user_id = request.path_params["user_id"]
    try:
        authorize(request, user_id)
    except HTTPProblem as exc:
        return exc.response
    state = await services_of(request).state.current(user_id)
    return json(_old_state(state))


async def user_state(request: Request) -> Response:
    """``GET /api/v1/user/{user_id}/state``: the state under the old names."""
    user_id = request.path_params["user_id"]
    try:
        authorize(request, user_id)
    except HTTPProblem as exc:
        return exc.response
    state = await services_of(request).state.current(user_id)
    return json(
        {
            "user_id": user_id,
            **_old_state(state),
            "state": state.state,
            "energy": state.energy,
            "reasoning": state.reasoning,
            "actions": list(state.actions),
            "version": state.version,
            "video_url": state.video_url,
        }
    )
