"""Frames on the wire: validation, the JSON a client sends, and its schema.

A ``frames`` message carries up to :data:`MAX_FRAMES_PER_MESSAGE` sensor samples. Each is
validated on its own (:func:`parse_frames`): a bad frame becomes a :class:`Rejection`
(index, field, reason) and the others of the batch are kept. Plain frames take a fast path
(type checks, no keyword dictionary, :func:`brain.model.new_frame`); anything unusual goes
to the general validator, which names the problem, so both give the same frames and the
same rejections. :func:`frame_json_schema` derives the JSON Schema from the same ranges.
Clients reach all of it through :mod:`server.protocol`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from brain.model import Env, Frame, new_frame
from server.protocol.codes import ProtocolError

MAX_FRAMES_PER_MESSAGE: Final = 500
DEFAULT_MAX_FUTURE_MS: Final = 5 * 60 * 1000
DEFAULT_MAX_AGE_MS: Final = 7 * 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why frame ``index`` of a batch was not accepted."""

    index: int
    field: str
    reason: str


@dataclass(frozen=True, slots=True)
class FrameLimits:
    """How far from ``now_ms`` a frame's timestamp may be."""

    max_future_ms: int = DEFAULT_MAX_FUTURE_MS
    max_age_ms: int = DEFAULT_MAX_AGE_MS


# Physiological and physical ranges, inclusive. Wider than any healthy reading, narrower
# than any sensor glitch we have seen.
_RANGES: Final[dict[str, tuple[float, float]]] = {
    "hr": (20, 250),
    "hrv": (1, 300),
    "steps": (0, 10_000),
    "spo2": (50, 100),
    "skin_temp": (20, 45),
    "resp_rate": (3, 70),
}
_ENV_RANGES: Final[dict[str, tuple[float, float]]] = {
    "altitude_m": (-500, 15_000),
    "temp_c": (-70, 70),
    "humidity_pct": (0, 100),
    "speed_mps": (0, 350),
}
_FRAME_FIELDS: Final = frozenset({*_RANGES, "ts", "device", "seq", "env"})
_ENV_FIELDS: Final = frozenset({*_ENV_RANGES, "weather"})
REJECTION_FIELDS: Final = frozenset(
    {"frame", *_FRAME_FIELDS, *(f"env.{name}" for name in _ENV_FIELDS)}
)
"""Every ``field`` a :class:`Rejection` names except an unknown key the client made up (a
fixed set: metrics label rejections with it and ``other``, never with the client's key)."""
DEVICE_RE: Final = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class _Bad(Exception):
    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason


def _number(name: str, value: object, lo: float, hi: float, *, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Bad(name, f"expected a number, got {type(value).__name__}")
    if integer and not (isinstance(value, int) or value.is_integer()):
        raise _Bad(name, "expected a whole number")
    if not lo <= value <= hi:
        raise _Bad(name, f"{value} is outside {lo:g}..{hi:g}")
    return value


def _env(raw: object) -> Env:
    if not isinstance(raw, Mapping):
        raise _Bad("env", f"expected an object, got {type(raw).__name__}")
    for key in raw:
        if key not in _ENV_FIELDS:
            raise _Bad(f"env.{key}", "unknown field")
    values: dict[str, Any] = {}
    for name, (lo, hi) in _ENV_RANGES.items():
        if (v := raw.get(name)) is not None:
            values[name] = float(_number(f"env.{name}", v, lo, hi))
    if (weather := raw.get("weather")) is not None:
        if not isinstance(weather, str) or not 0 < len(weather) <= 32:
            raise _Bad("env.weather", "expected a string of 1 to 32 characters")
        values["weather"] = weather
    return Env(**values)


def parse_frame(raw: object, *, now_ms: int, limits: FrameLimits) -> Frame:
    """Validate one frame object and return it as a :class:`Frame`.

    Raises :class:`ValueError` whose args are ``(field, reason)`` for the first problem.
    """
    try:
        return _parse_frame(raw, now_ms=now_ms, limits=limits)
    except _Bad as bad:
        raise ValueError(bad.field, bad.reason) from None


def _parse_frame(raw: object, *, now_ms: int, limits: FrameLimits) -> Frame:
    if not isinstance(raw, Mapping):
        raise _Bad("frame", f"expected an object, got {type(raw).__name__}")
    for key in raw:
        if key not in _FRAME_FIELDS:
            raise _Bad(str(key), "unknown field")
    if "ts" not in raw:
        raise _Bad("ts", "required")
    ts = int(_number("ts", raw["ts"], 0, 2**53, integer=True))
    if ts > now_ms + limits.max_future_ms:
        raise _Bad("ts", f"{ts - now_ms} ms in the future (at most {limits.max_future_ms})")
    if ts < now_ms - limits.max_age_ms:
        raise _Bad("ts", f"older than {limits.max_age_ms} ms")
    values: dict[str, Any] = {"ts": ts}
    for name, (lo, hi) in _RANGES.items():
        if (v := raw.get(name)) is not None:
            number = _number(name, v, lo, hi, integer=name == "steps")
            values[name] = int(number) if name == "steps" else float(number)
    if (device := raw.get("device")) is not None:
        if not isinstance(device, str) or not DEVICE_RE.match(device):
            raise _Bad("device", "expected 1-64 characters of A-Z a-z 0-9 . _ : -")
        values["device"] = device
    if (seq := raw.get("seq")) is not None:
        values["seq"] = int(_number("seq", seq, 0, 2**31 - 1, integer=True))
    if (env := raw.get("env")) is not None and (parsed := _env(env)) != Env():
        values["env"] = parsed  # an empty ``env: {}`` is no measurement: left out
    if len(values) == 1 + ("device" in values) + ("seq" in values):
        raise _Bad("frame", "carries no measurement")
    return Frame(**values)


def parse_frames(
    raw_frames: object, *, now_ms: int, limits: FrameLimits
) -> tuple[tuple[Frame, ...], tuple[Rejection, ...]]:
    """Validate a list of frame objects: the valid frames, and a rejection per invalid one.

    Raises :class:`ProtocolError` if ``raw_frames`` is not a list or is too long.
    """
    if not isinstance(raw_frames, list):
        raise ProtocolError("bad_message", "'frames' must be a list")
    if len(raw_frames) > MAX_FRAMES_PER_MESSAGE:
        raise ProtocolError(
            "too_big", f"{len(raw_frames)} frames in one batch (at most {MAX_FRAMES_PER_MESSAGE})"
        )
    frames: list[Frame] = []
    rejected: list[Rejection] = []
    oldest, newest = now_ms - limits.max_age_ms, now_ms + limits.max_future_ms
    devices: set[str] = set()
    for index, raw in enumerate(raw_frames):
        frame = _plain_frame(raw, oldest, newest, devices)
        if frame is not None:
            frames.append(frame)
            continue
        try:
            frames.append(_parse_frame(raw, now_ms=now_ms, limits=limits))
        except _Bad as bad:
            rejected.append(Rejection(index, bad.field, bad.reason))
    return tuple(frames), tuple(rejected)


_NO_ENV: Final = Env()
_MAX_TS: Final = 2**53
_MAX_SEQ: Final = 2**31 - 1
_FLOAT_OR_INT: Final = (float, int)
_HR, _HRV, _STEPS = _RANGES["hr"], _RANGES["hrv"], _RANGES["steps"]
_SPO2, _SKIN_TEMP, _RESP_RATE = _RANGES["spo2"], _RANGES["skin_temp"], _RANGES["resp_rate"]


def _plain_frame(raw: object, oldest: int, newest: int, devices: set[str]) -> Frame | None:
    """``raw`` as a frame when it is a plain valid one, else ``None`` (then
    :func:`_parse_frame` decides, and names the problem).

    Plain: a ``dict`` of known keys, an ``int`` ``ts``, ``steps`` and ``seq``, readings of
    type ``float`` or ``int``, all in range (``env`` goes through :func:`_env`). What it
    accepts, :func:`_parse_frame` accepts as the same frame; it only skips that function's
    generality (``Mapping`` checks, a dict of values, keyword construction), which cost half
    the server's time per frame.
    ``devices`` holds the device names already matched during this batch.
    """
    if type(raw) is not dict or not _FRAME_FIELDS.issuperset(raw):
        return None
    get = raw.get
    ts = get("ts")
    if type(ts) is not int or not (0 <= ts <= _MAX_TS and oldest <= ts <= newest):
        return None
    measured = False
    hr = get("hr")
    if hr is not None:
        if type(hr) not in _FLOAT_OR_INT or not _HR[0] <= hr <= _HR[1]:
            return None
        hr, measured = float(hr), True
    hrv = get("hrv")
    if hrv is not None:
        if type(hrv) not in _FLOAT_OR_INT or not _HRV[0] <= hrv <= _HRV[1]:
            return None
        hrv, measured = float(hrv), True
    steps = get("steps")
    if steps is not None:
        if type(steps) is not int or not _STEPS[0] <= steps <= _STEPS[1]:
            return None
        measured = True
    spo2 = get("spo2")
    if spo2 is not None:
        if type(spo2) not in _FLOAT_OR_INT or not _SPO2[0] <= spo2 <= _SPO2[1]:
            return None
        spo2, measured = float(spo2), True
    skin_temp = get("skin_temp")
    if skin_temp is not None:
        if type(skin_temp) not in _FLOAT_OR_INT or not _SKIN_TEMP[0] <= skin_temp <= _SKIN_TEMP[1]:
            return None
        skin_temp, measured = float(skin_temp), True
    resp_rate = get("resp_rate")
    if resp_rate is not None:
        if type(resp_rate) not in _FLOAT_OR_INT or not _RESP_RATE[0] <= resp_rate <= _RESP_RATE[1]:
            return None
        resp_rate, measured = float(resp_rate), True
    env = get("env")
    if env is not None:
        try:
            env = _env(env)
        except _Bad:
            return None
        if env == _NO_ENV:
            env = None  # an empty ``env: {}`` is no measurement: left out
        else:
            measured = True
    if not measured:
        return None
    device = get("device")
    if device is None:
        device = "unknown"
    elif type(device) is not str:
        return None
    elif device not in devices:
        if not DEVICE_RE.match(device):
            return None
        devices.add(device)
    seq = get("seq")
    if seq is None:
        seq = 0
    elif type(seq) is not int or not 0 <= seq <= _MAX_SEQ:
        return None
    return new_frame(ts, hr, hrv, steps, spo2, skin_temp, resp_rate, device, seq, env)


def frame_to_wire(frame: Frame) -> dict[str, Any]:
    """A :class:`Frame` as the JSON object a client sends (``None`` fields left out)."""
    out: dict[str, Any] = {"ts": frame.ts, "device": frame.device}
    for name in ("hr", "hrv", "steps", "spo2", "skin_temp", "resp_rate"):
        if (value := getattr(frame, name)) is not None:
            out[name] = value
    if frame.seq:
        out["seq"] = frame.seq
    if frame.env is not None:
        env = {
            k: getattr(frame.env, k)
            for k in (*_ENV_RANGES, "weather")
            if getattr(frame.env, k) is not None
        }
        if env:
            out["env"] = env
    return out


def frame_json_schema() -> dict[str, Any]:
    """The JSON Schema of a client frame, from the ranges :func:`parse_frame` checks (one
    source: the OpenAPI document embeds it). What a schema cannot say is in the
    descriptions: ``ts`` must lie within the accepted window around the server's clock, and
    a frame must carry at least one measurement."""

    def ranged(name: str, lo: float, hi: float) -> dict[str, Any]:
        kind = "integer" if name == "steps" else "number"
        return {"type": kind, "minimum": lo, "maximum": hi}

    env = {
        "type": "object",
        "properties": {
            **{name: ranged(name, lo, hi) for name, (lo, hi) in _ENV_RANGES.items()},
            "weather": {"type": "string", "minLength": 1, "maxLength": 32},
        },
        "additionalProperties": False,
    }
    measurements = [*_RANGES, "env"]
    return {
        "type": "object",
        "required": ["ts"],
        "properties": {
            "ts": {
                "type": "integer",
                "minimum": 0,
                "maximum": 2**53,
                "description": "epoch milliseconds; at most "
                f"{DEFAULT_MAX_FUTURE_MS // 60000} minutes ahead of the server's clock and "
                "no older than the server's frame age limit",
            },
            **{name: ranged(name, lo, hi) for name, (lo, hi) in _RANGES.items()},
            "device": {"type": "string", "pattern": DEVICE_RE.pattern},
            "seq": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
            "env": env,
        },
        "additionalProperties": False,
        "anyOf": [{"required": [name]} for name in measurements],
        "description": "one sensor sample; at least one measurement besides ts",
    }
