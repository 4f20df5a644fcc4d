"""The polling API that watches in the field and the seeds' clients still call.

- ``POST /sensor-data`` — ``{user_id, heart_rate?, hrv?, steps?, spo2?, skin_temp?,
  timestamp?}`` or ``{user_id, readings: [...]}``; one reading or several.
- ``POST /api/v1/user/{id}/data`` — the same body without ``user_id``.
- ``GET /avatar/current-state/{user_id}`` — ``{state_hash, timestamp, image_url, mood}``.
- ``GET /api/v1/user/{id}/state`` — the seed's ``pet_state``/``health_metrics`` shape, with
  the state fields beside it.
- ``POST /api/v1/demo/trigger`` — the seed's demo button: inject a scenario, then analyse.

Old readings name fields ``heart_rate`` and ``timestamp`` (seconds or milliseconds); they
are translated to v1 frames and go through the same validation and ingest path, so a bad
reading is rejected with its field and reason exactly as on the new API. Legacy firmware
cannot set headers, so every route here also takes the token as ``?token=`` (so do the v1
routes); the access log never shows query strings. Bodies are read as JSON whatever their
``Content-Type`` says, as the old Lambdas did (``json.loads(event["body"])``).

``timestamp`` is the commit time of the current version in epoch **milliseconds**: old
watches compare it with the last one they saw, and at one-second resolution the image
commit that follows a state commit within the same second was missed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response

from brain.model import SNAPSHOT_FIELDS, State
from server.http.access import authenticate, authorize, json, read_object, require_user, services_of
from server.http.analyse_routes import schedule
from server.http.rest import ingest_frames, rejection_dict
from server.http.scenario_routes import DEFAULT_MINUTES, MAY_INJECT, inject, scenario_of
from server.problems import HTTPProblem
from server.store.base import UserState
from server.store.codec import state_fields

_RENAMES: Final = {"heart_rate": "hr", "timestamp": "ts", "skin_temperature": "skin_temp"}
_SECONDS_BEFORE: Final = 10**11
"""Timestamps below this are seconds (the old watches sent seconds), above it milliseconds."""

STRESS_LEVELS: Final = {
    State.STRESSED.value: "high",
    State.FATIGUED.value: "moderate",
    State.EXERCISING.value: "moderate",
}
"""The seed's ``health_metrics.stress_level`` from the current state; other states: low."""


def _bad_request(detail: str) -> HTTPProblem:
    # ``error`` keeps the member the old API answered with.
    return HTTPProblem(400, detail, error=detail)


def _to_frame(reading: Any, now_ms: int) -> Any:
    if not isinstance(reading, dict):
        return reading  # validation reports it
    frame = {_RENAMES.get(k, k): v for k, v in reading.items() if k != "user_id"}
    ts = frame.get("ts")
    if ts is None:
        frame["ts"] = now_ms
    elif (
        isinstance(ts, int | float)
        and not isinstance(ts, bool)
        and 0 <= ts < _SECONDS_BEFORE  # also false for nan; inf is left to validation
    ):
        frame["ts"] = round(ts * 1000)
    frame.setdefault("device", "legacy-watch")
    return frame


async def _ingest(request: Request, path_user: str | None) -> Response:
    # The token first (401 before any word about the body), then the body, then the user.
    principal = authenticate(request)
    if path_user is not None:
        require_user(principal, path_user)
    body = await read_object(request, any_media_type=True)
    user_id = path_user or body.get("user_id")
    if not isinstance(user_id, str):
        raise _bad_request("user_id is required")
    require_user(principal, user_id)
    readings = body.get("readings")
    if readings is None:
        readings = [{k: v for k, v in body.items() if k != "user_id"}]
    if not isinstance(readings, list):
        raise _bad_request("readings must be a list")
    services = services_of(request)
    now_ms = services.now_ms()
    frames = [_to_frame(r, now_ms) for r in readings]
    accepted, rejected = await ingest_frames(request, principal, user_id, frames)
    state = await services.state.current(user_id)
    return json(
        {
            "status": "ok",
            "accepted": accepted,
            "rejected": [rejection_dict(r) for r in rejected],
            **old_state(state),
        }
    )


def old_state(state: UserState) -> dict[str, Any]:
    """The polling answer of seed 000: ``{state_hash, timestamp, image_url, mood}``."""
    return {
        "state_hash": state.state_hash,
        "timestamp": state.updated_at,
        "image_url": state.image_url,
        "mood": state.mood,
    }


def _iso(epoch_ms: int) -> str | None:
    if epoch_ms <= 0:
        return None
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def seed_state(state: UserState) -> dict[str, Any]:
    """The state in seed 001's shape, plus every state field and the polling fields.

    ``pet_state`` is ``{mood, energy_budget, last_update}`` (ISO 8601, ``null`` before the
    first commit); ``energy_budget`` is the day's budget of the health metrics when known,
    else the state's ``energy``. ``health_metrics`` is the seed's ``{hrv_trend,
    sleep_hours, stress_level}`` from the state's health metrics (the last three days,
    oldest first; ``null`` while none are known); a ``stress_level`` the metrics do not
    know comes from the state (docs/protocol.md).
    """
    fields = state_fields(state)
    health = state.health
    seeds: dict[str, Any] = {"hrv_trend": None, "sleep_hours": None, "stress_level": None}
    budget = state.energy
    if health is not None:
        seeds = {
            "hrv_trend": list(health.hrv_trend) or None,
            "sleep_hours": list(health.sleep_hours) or None,
            "stress_level": health.stress_level,
        }
        budget = health.energy_budget if health.energy_budget is not None else budget
    if seeds["stress_level"] is None:
        seeds["stress_level"] = STRESS_LEVELS.get(state.state, "low")
    return {
        **{name: fields[name] for name in SNAPSHOT_FIELDS},
        **old_state(state),
        "pet_state": {
            "mood": state.mood,
            "energy_budget": budget,
            "last_update": _iso(state.updated_at),
        },
        "health_metrics": seeds,
    }


async def sensor_data(request: Request) -> Response:
    """``POST /sensor-data``."""
    return await _ingest(request, None)


async def user_data(request: Request) -> Response:
    """``POST /api/v1/user/{user_id}/data``."""
    return await _ingest(request, request.path_params["user_id"])


async def avatar_current_state(request: Request) -> Response:
    """``GET /avatar/current-state/{user_id}`` → ``{state_hash, timestamp, image_url, mood}``."""
    user_id = request.path_params["user_id"]
    authorize(request, user_id)
    return json(old_state(await services_of(request).state.current(user_id)))


async def user_state(request: Request) -> Response:
    """``GET /api/v1/user/{user_id}/state``: the seed's shape (:func:`seed_state`)."""
    user_id = request.path_params["user_id"]
    authorize(request, user_id)
    return json(seed_state(await services_of(request).state.current(user_id)))


async def demo_trigger(request: Request) -> Response:
    """``POST /api/v1/demo/trigger`` ``{user_id?, scenario?, minutes?}``: the seed's demo
    button. With a ``scenario`` (``stress``, ``exercise`` … any case), its frames are
    ingested as ``POST /v1/demo/users/{id}/scenario`` does; then an analysis is scheduled
    when this server runs one, so the state follows from the frames, never forced.

    A service token, or the user's own debug token (``user_id`` defaults to the token's).
    """
    principal = authenticate(request)
    body = await read_object(request, optional=True, any_media_type=True)
    user_id = body.pop("user_id", principal.user_id)
    if not isinstance(user_id, str):
        raise _bad_request("user_id must be a string")
    require_user(principal, user_id)
    if principal.device not in MAY_INJECT:
        raise HTTPProblem(403, "the demo trigger needs a service token or the user's debug token")
    injected = 0
    kind = None
    if body:
        body.setdefault("minutes", DEFAULT_MINUTES)
        kind, minutes = scenario_of(body)
        injected = len(await inject(request, user_id, kind, minutes))
    try:
        scheduled = schedule(request, user_id, force=False)
    except HTTPProblem:
        scheduled = False  # no pipeline here: the frames are stored all the same
    return json(
        {
            "status": "accepted",
            "user_id": user_id,
            "scenario": kind,
            "accepted": injected,
            "analysis_scheduled": scheduled,
        },
        status=202,
    )
