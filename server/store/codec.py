"""Translation of store records to plain data and back, shared by both adapters.

The adapters differ in how they hold a record (a SQLite row, a DynamoDB item) but agree
on what it means: a frame's payload is the same compact JSON in both, a frame expires at
the same second, and :func:`export_document` gives the same document whatever store
answered. Everything here is pure and raises :class:`ValueError` (or :class:`KeyError`) on
data it cannot read back.
"""

from __future__ import annotations

from typing import Any

import orjson

from brain.health import HealthMetrics
from brain.model import SNAPSHOT_FIELDS, AvatarStatus, CoachStyle, CoachTone, Env, Frame, Profile
from server.store.base import SERVICE_COSTS, Usage, UserState

SECONDS_PER_DAY = 86_400

_FRAME_FIELDS = ("ts", "hr", "hrv", "steps", "spo2", "skin_temp", "resp_rate", "device", "seq")
_ENV_FIELDS = ("altitude_m", "temp_c", "humidity_pct", "speed_mps", "weather")


def frame_to_dict(frame: Frame) -> dict[str, Any]:
    """The frame as JSON-ready data; fields that are ``None`` are left out."""
    data: dict[str, Any] = {
        name: value for name in _FRAME_FIELDS if (value := getattr(frame, name)) is not None
    }
    if frame.env is not None:
        env = {
            name: value for name in _ENV_FIELDS if (value := getattr(frame.env, name)) is not None
        }
        data["env"] = env
    return data


def frame_from_dict(data: dict[str, Any]) -> Frame:
    """The frame that :func:`frame_to_dict` made ``data`` from.

    Raises :class:`ValueError` without ``ts`` or with fields a frame does not have.
    """
    unknown = set(data) - set(_FRAME_FIELDS) - {"env"}
    if unknown or "ts" not in data:
        raise ValueError(f"not a stored frame: missing ts or unknown fields {sorted(unknown)}")
    fields = {name: data[name] for name in _FRAME_FIELDS if name in data}
    env = data.get("env")
    return Frame(**fields, env=None if env is None else Env(**env))


def encode_frame(frame: Frame) -> bytes:
    """The frame's stored payload: compact JSON without ``None`` fields."""
    return orjson.dumps(frame_to_dict(frame))


def decode_frame(payload: bytes | str) -> Frame:
    """The frame stored as ``payload``; raises :class:`ValueError` on malformed JSON."""
    data = orjson.loads(payload)
    if not isinstance(data, dict):
        raise ValueError(f"a frame payload must be a JSON object, not {type(data).__name__}")
    return frame_from_dict(data)


def expires_at(frame: Frame, retention_days: int) -> int:
    """Epoch second from which the frame is no longer kept (DynamoDB's TTL attribute)."""
    return frame.ts // 1000 + retention_days * SECONDS_PER_DAY


def profile_to_dict(profile: Profile) -> dict[str, str]:
    """The profile as JSON-ready data."""
    return {
        "style": profile.style.value,
        "tone": profile.tone.value,
        "base_avatar": profile.base_avatar,
        "tier": profile.tier,
    }


def profile_from_dict(data: dict[str, Any]) -> Profile:
    """The profile in ``data``; missing fields take their defaults.

    Raises :class:`ValueError` on a style or tone outside the enums.
    """
    default = Profile()
    return Profile(
        style=CoachStyle(data.get("style", default.style)),
        tone=CoachTone(data.get("tone", default.tone)),
        base_avatar=str(data.get("base_avatar", default.base_avatar)),
        tier=str(data.get("tier", default.tier)),
    )


def state_fields(state: UserState) -> dict[str, Any]:
    """The state's fields of :data:`~brain.model.SNAPSHOT_FIELDS` as JSON-ready data
    (``actions`` a list): what a snapshot and ``GET /v1/users/{id}/state`` carry."""
    data = {name: getattr(state, name) for name in SNAPSHOT_FIELDS}
    data["actions"] = list(state.actions)
    data["health"] = None if state.health is None else state.health.to_dict()
    return data


def state_to_dict(state: UserState) -> dict[str, Any]:
    """Every field of the state as JSON-ready data: :func:`state_fields` and ``profile``."""
    return {**state_fields(state), "profile": profile_to_dict(state.profile)}


_READERS: dict[str, Any] = {"version": int, "energy": int, "updated_at": int}
_ABSENT: dict[str, Any] = {
    "image_url": None,
    "video_url": None,
    "video_status": AvatarStatus.NONE.value,
    "health": None,
}
"""Fields a record may lack, and what they mean then (rows from before clips have neither
video field, rows from before health metrics no ``health``; a state without an image has no
``image_url``)."""


def state_from_dict(data: dict[str, Any]) -> UserState:
    """The state :func:`state_to_dict` made ``data`` from; raises :class:`KeyError`, and
    :class:`ValueError` for health metrics out of shape."""
    values: dict[str, Any] = {}
    for name in SNAPSHOT_FIELDS:
        value = data.get(name, _ABSENT[name]) if name in _ABSENT else data[name]
        if name == "actions":
            values[name] = tuple(str(action) for action in value or ())
        elif name == "health":
            values[name] = None if value is None else HealthMetrics.from_dict(value)
        elif value is None:
            values[name] = None
        else:
            values[name] = _READERS.get(name, str)(value)
    return UserState(
        **values,
        profile=profile_from_dict(data.get("profile") or {}),
        epoch=int(data.get("epoch") or 0),
    )


def usage_to_dict(usage: Usage) -> dict[str, Any]:
    """The usage record as JSON-ready data."""
    return {
        "user_id": usage.user_id,
        "day": usage.day,
        "calls": usage.calls,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cost_usd": usage.cost_usd,
        "cache_write_tokens": usage.cache_write_tokens,
        "cache_read_tokens": usage.cache_read_tokens,
        **{name: getattr(usage, name) for name in SERVICE_COSTS},
    }


def export_document(
    user_id: str, state: UserState | None, frames: list[Frame], usage: list[Usage]
) -> dict[str, Any]:
    """The GDPR export of one user: ``user_id``, ``state``, ``frames``, ``usage``.

    ``frames`` are oldest first and ``usage`` is sorted by day, so both adapters export
    the same document for the same data.
    """
    return {
        "user_id": user_id,
        "state": None if state is None else state_to_dict(state),
        "frames": [frame_to_dict(frame) for frame in frames],
        "usage": [usage_to_dict(item) for item in sorted(usage, key=lambda u: u.day)],
    }
