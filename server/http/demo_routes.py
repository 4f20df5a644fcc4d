"""Demo and admin routes under ``/v1/demo/…`` (service tokens only).

``POST /v1/demo/users/{id}/state`` drives the commit path directly (the scenario injector's
door); ``PUT /v1/demo/users/{id}/profile`` sets the coach persona and base avatar.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from brain.model import Action, AvatarStatus, CoachStyle, CoachTone, Mood, Profile, Source, State
from server.auth import DeviceKind
from server.errors import VersionConflict
from server.http.rest import HTTPProblem, authorize, json, read_json, services_of
from server.problems import problem
from server.push.endpoint import snapshot_fields
from server.store.base import UserState

_URL_PREFIXES = ("http://", "https://", "/media/")
_ENUMS: dict[str, type[Any]] = {
    "state": State,
    "mood": Mood,
    "source": Source,
    "avatar_status": AvatarStatus,
}


def require_service(request: Request, user_id: str) -> None:
    """Raise :class:`HTTPProblem` (401/403) unless the caller has a service token."""
    principal = authorize(request, user_id)
    if principal.device is not DeviceKind.SERVICE:
        raise HTTPProblem(problem(403, "demo routes need a service token"))


def validate_changes(body: Any) -> dict[str, Any]:
    """The state changes in a demo body. Raises :class:`HTTPProblem` (422) naming the field."""
    if not isinstance(body, dict):
        raise HTTPProblem(problem(400, "body must be a JSON object"))
    changes: dict[str, Any] = {}
    for name, value in body.items():
        if name == "force":
            continue
        if name in _ENUMS:
            try:
                changes[name] = _ENUMS[name](value).value
            except ValueError:
                allowed = ", ".join(m.value for m in _ENUMS[name])
                raise HTTPProblem(problem(422, f"{name}: must be one of {allowed}")) from None
        elif name == "energy":
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
                raise HTTPProblem(problem(422, "energy: must be a whole number 0..100"))
            changes[name] = value
        elif name == "reasoning":
            if not isinstance(value, str) or len(value) > 500:
                raise HTTPProblem(problem(422, "reasoning: must be a string of at most 500"))
            changes[name] = value
        elif name == "actions":
            try:
                changes[name] = tuple(Action(a).value for a in value)
            except (TypeError, ValueError):
                raise HTTPProblem(
                    problem(422, "actions: must be a list of known actions")
                ) from None
        elif name == "image_url":
            if value is not None and not (
                isinstance(value, str) and len(value) <= 2048 and value.startswith(_URL_PREFIXES)
            ):
                raise HTTPProblem(
                    problem(422, "image_url: must be null or an http(s) or /media URL of <= 2048")
                )
            changes[name] = value
        else:
            raise HTTPProblem(problem(422, f"{name}: unknown field"))
    changes.setdefault("source", Source.MANUAL.value)
    return changes


async def post_state(request: Request) -> Response:
    """Commit state changes for a user; no new version when nothing visible changes
    (unless ``force``)."""
    user_id = request.path_params["user_id"]
    try:
        require_service(request, user_id)
        body = await read_json(request)
        changes = validate_changes(body)
    except HTTPProblem as exc:
        return exc.response
    force = bool(body.get("force"))

    def decide(current: UserState) -> dict[str, Any] | None:
        visible = current.visible()
        differs = any(
            visible.get(k) != (list(v) if k == "actions" else v) for k, v in changes.items()
        )
        return changes if differs or force else None

    services = services_of(request)
    try:
        committed = await services.state.update(user_id, decide, cause="demo")
    except VersionConflict as exc:
        return problem(409, str(exc))
    state = committed if committed is not None else await services.state.current(user_id)
    return json({"committed": committed is not None, **snapshot_fields(state)})


async def put_profile(request: Request) -> Response:
    """Set a user's coach persona and base avatar (``style``, ``tone``, ``base_avatar``)."""
    user_id = request.path_params["user_id"]
    try:
        require_service(request, user_id)
        body = await read_json(request)
        if not isinstance(body, dict):
            raise HTTPProblem(problem(400, "body must be a JSON object"))
    except HTTPProblem as exc:
        return exc.response
    services = services_of(request)
    current = (await services.state.current(user_id)).profile
    try:
        profile = Profile(
            style=CoachStyle(body.get("style", current.style)),
            tone=CoachTone(body.get("tone", current.tone)),
            base_avatar=str(body.get("base_avatar", current.base_avatar)),
        )
    except ValueError as exc:
        return problem(422, f"profile: {exc}")
    if not profile.base_avatar.isalnum() or len(profile.base_avatar) > 32:
        return problem(422, "base_avatar: must be 1-32 letters or digits")
    state = await services.state.set_profile(user_id, profile)
    return json(
        {
            "user_id": user_id,
            "profile": {
                "style": state.profile.style.value,
                "tone": state.profile.tone.value,
                "base_avatar": state.profile.base_avatar,
            },
        }
    )
