"""Demo and admin routes under ``/v1/demo/…`` (service tokens only).

``POST /v1/demo/users/{id}/state`` drives the commit path directly (the scenario injector's
door); ``PUT /v1/demo/users/{id}/profile`` sets the coach persona and base avatar.
"""

from __future__ import annotations

from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response

from brain.avatar.prompt import Species
from brain.model import USER_STATE_FIELDS, Action, CoachStyle, CoachTone, Profile, Source
from server.auth import DeviceKind, Principal
from server.errors import VersionConflict
from server.http.access import authorize, json, read_object, services_of
from server.problems import HTTPProblem
from server.store.base import UserState
from server.store.codec import profile_to_dict, state_fields

SERVICE_ONLY: Final = frozenset({DeviceKind.SERVICE})
_URL_PREFIXES = ("http://", "https://", "/media/")
_CHOICES: Final = {
    f.name: tuple(f.schema["enum"]) for f in USER_STATE_FIELDS if f.visible and "enum" in f.schema
}
"""The state fields whose values come from an enum, and their values (from the one list)."""
_PROFILE_ENUMS: dict[str, type[Any]] = {
    "style": CoachStyle,
    "tone": CoachTone,
    "base_avatar": Species,
}


def require_service(request: Request, user_id: str) -> Principal:
    """The caller, who must hold a service token. Raises 401/403 (see :func:`authorize`)."""
    return authorize(request, user_id, SERVICE_ONLY)


def _enum_value(name: str, enum: type[Any], value: Any, status: int = 422) -> str:
    """``value`` as a member of ``enum``, in any letter case (the seeds wrote ``STRICT``).

    Raises :class:`HTTPProblem` naming the field and the allowed values.
    """
    try:
        member = enum(value.lower() if isinstance(value, str) else value)
    except ValueError:
        allowed = ", ".join(m.value for m in enum)
        raise HTTPProblem(status, f"{name}: must be one of {allowed}") from None
    return str(member.value)


def _choice(name: str, allowed: tuple[str, ...], value: Any) -> str:
    """``value`` as one of ``allowed``, in any letter case. Raises :class:`HTTPProblem` 422."""
    chosen = value.lower() if isinstance(value, str) else value
    if chosen not in allowed:
        raise HTTPProblem(422, f"{name}: must be one of {', '.join(allowed)}")
    return str(chosen)


def validate_changes(body: dict[str, Any]) -> dict[str, Any]:
    """The state changes in a demo body. Raises :class:`HTTPProblem` (422) naming the field."""
    changes: dict[str, Any] = {}
    for name, value in body.items():
        if name == "force":
            if not isinstance(value, bool):
                raise HTTPProblem(422, "force: must be true or false")
        elif name in _CHOICES:
            changes[name] = _choice(name, _CHOICES[name], value)
        elif name == "energy":
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
                raise HTTPProblem(422, "energy: must be a whole number 0..100")
            changes[name] = value
        elif name == "reasoning":
            if not isinstance(value, str) or len(value) > 500:
                raise HTTPProblem(422, "reasoning: must be a string of at most 500")
            changes[name] = value
        elif name == "actions":
            if not isinstance(value, list):
                raise HTTPProblem(422, "actions: must be a list of known actions")
            changes[name] = tuple(_enum_value("actions", Action, a) for a in value)
        elif name == "image_url":
            if value is not None and not (
                isinstance(value, str) and len(value) <= 2048 and value.startswith(_URL_PREFIXES)
            ):
                raise HTTPProblem(
                    422, "image_url: must be null or an http(s) or /media URL of <= 2048"
                )
            changes[name] = value
        else:
            raise HTTPProblem(422, f"{name[:64]}: unknown field")
    changes.setdefault("source", Source.MANUAL.value)
    return changes


async def commit_changes(
    request: Request, user_id: str, changes: dict[str, Any], *, force: bool, cause: str
) -> Response:
    """Commit ``changes`` for the user (no new version when nothing visible changes, unless
    ``force``); answer ``{committed, …state fields}``. Raises 409 on a lost race."""

    def decide(current: UserState) -> dict[str, Any] | None:
        visible = current.visible()
        differs = any(
            visible.get(k) != (list(v) if k == "actions" else v) for k, v in changes.items()
        )
        return changes if differs or force else None

    services = services_of(request)
    try:
        committed = await services.state.update(user_id, decide, cause=cause)
    except VersionConflict:
        raise HTTPProblem(409, "the state changed meanwhile; send the request again") from None
    state = committed if committed is not None else await services.state.current(user_id)
    return json({"committed": committed is not None, **state_fields(state)})


async def post_state(request: Request) -> Response:
    """Commit state changes for a user; no new version when nothing visible changes
    (unless ``force``)."""
    user_id = request.path_params["user_id"]
    require_service(request, user_id)
    body = await read_object(request)
    changes = validate_changes(body)
    return await commit_changes(
        request, user_id, changes, force=body.get("force") is True, cause="demo"
    )


async def put_profile(request: Request) -> Response:
    """Set a user's coach persona and base avatar (``style``, ``tone``, ``base_avatar``,
    each optional, in any letter case). An unsupported value is 400 naming the field."""
    user_id = request.path_params["user_id"]
    require_service(request, user_id)
    body = await read_object(request)
    unknown = sorted(set(body) - set(_PROFILE_ENUMS))
    if unknown:
        raise HTTPProblem(400, f"{unknown[0][:64]}: unknown field (style, tone, base_avatar)")
    services = services_of(request)
    current = profile_to_dict((await services.state.current(user_id)).profile)
    chosen = {
        name: _enum_value(name, enum, body[name], status=400) if name in body else current[name]
        for name, enum in _PROFILE_ENUMS.items()
    }
    profile = Profile(
        style=CoachStyle(chosen["style"]),
        tone=CoachTone(chosen["tone"]),
        base_avatar=chosen["base_avatar"],
    )
    state = await services.state.set_profile(user_id, profile)
    return json({"user_id": user_id, "profile": profile_to_dict(state.profile)})
