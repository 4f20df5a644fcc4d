"""Wire protocol v1: parse client messages, validate frames, encode server messages.

Sans-I/O: this module turns text into typed messages and typed messages into text, and
knows nothing of sockets or event loops, so clients (which may import only this module
from the server) and the server share one codec, and it is tested without a loop.

Client → server: ``hello``, ``frames``, ``subscribe``, ``ping``, ``policy``, ``seen`` (what
a device has shown), ``command_result`` (a device's answer to a command).
Server → client: ``snapshot``, ``delta``, ``ack``, ``pong``, ``uptodate``, ``error``,
``policy`` (the delivery policy in force, the answer to a ``policy`` op), ``commands`` (the
commands of a user's actions), ``command_ack``, and ``frames`` (a summary of ingested
frames, for debug subscribers only).

A bad message raises :class:`ProtocolError` with a stable ``code``; a bad *frame* inside a
valid ``frames`` message does not: it is reported as a :class:`Rejection` (index, field,
reason) while the other frames of the batch are kept.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import orjson

from brain.model import SNAPSHOT_FIELDS as SNAPSHOT_FIELDS
from brain.model import Env, Frame, new_frame

VERSION: Final = 1
MAX_MESSAGE_BYTES: Final = 64 * 1024
MAX_FRAMES_PER_MESSAGE: Final = 500
DEFAULT_MAX_FUTURE_MS: Final = 5 * 60 * 1000
DEFAULT_MAX_AGE_MS: Final = 7 * 24 * 3600 * 1000

# Close codes (RFC 6455 and the application range), in one place.
CLOSE_NORMAL: Final = 1000
CLOSE_GOING_AWAY: Final = 1001
CLOSE_PROTOCOL_ERROR: Final = 1002
CLOSE_BAD_DATA: Final = 1007
CLOSE_POLICY: Final = 1008
CLOSE_TOO_BIG: Final = 1009
CLOSE_INTERNAL: Final = 1011
CLOSE_RESTART: Final = 1012
CLOSE_TRY_LATER: Final = 1013
CLOSE_TOKEN_EXPIRED: Final = 4001
CLOSE_FORBIDDEN: Final = 4003


class Reconnect(enum.Enum):
    """What a client does after a disconnect (centrifuge's ``disconnect.go`` rule)."""

    SOON = "soon"
    """Come back after a short, jittered pause, to any node (restart, overload)."""
    BACKOFF = "backoff"
    """Come back after the next exponential backoff delay (a passing problem)."""
    STOP = "stop"
    """Reconnecting with the same token cannot help: stop and say why."""


@dataclass(frozen=True, slots=True)
class Disconnect:
    """One named way a connection ends: its close code, its reason and the reconnect rule.

    ``reason`` is a fixed, short string: it is sent in the close frame, used as the
    ``reason`` label of ``companion_closes_total`` (so the label set is bounded) and
    shown by clients.
    """

    code: int
    reason: str
    reconnect: Reconnect


class Disconnects:
    """Every disconnect the server makes, by name; the one table for server, metrics, clients."""

    NORMAL: Final = Disconnect(CLOSE_NORMAL, "normal", Reconnect.BACKOFF)
    PROTOCOL_ERROR: Final = Disconnect(CLOSE_PROTOCOL_ERROR, "protocol error", Reconnect.BACKOFF)
    BAD_UTF8: Final = Disconnect(CLOSE_BAD_DATA, "invalid utf-8", Reconnect.BACKOFF)
    SLOW_CONSUMER: Final = Disconnect(CLOSE_POLICY, "slow consumer", Reconnect.BACKOFF)
    RATE_LIMIT: Final = Disconnect(CLOSE_POLICY, "rate limit", Reconnect.BACKOFF)
    PROTOCOL_ERRORS: Final = Disconnect(CLOSE_POLICY, "too many protocol errors", Reconnect.BACKOFF)
    TOO_MANY_SUBSCRIPTIONS: Final = Disconnect(
        CLOSE_POLICY, "too many subscriptions", Reconnect.BACKOFF
    )
    FRAGMENTED: Final = Disconnect(CLOSE_POLICY, "too many fragments", Reconnect.BACKOFF)
    TOO_BIG: Final = Disconnect(CLOSE_TOO_BIG, "message too big", Reconnect.BACKOFF)
    INTERNAL: Final = Disconnect(CLOSE_INTERNAL, "internal error", Reconnect.BACKOFF)
    RESTART: Final = Disconnect(CLOSE_RESTART, "server restart", Reconnect.SOON)
    TRY_LATER: Final = Disconnect(CLOSE_TRY_LATER, "try again later", Reconnect.SOON)
    TOKEN_EXPIRED: Final = Disconnect(CLOSE_TOKEN_EXPIRED, "token expired", Reconnect.STOP)
    FORBIDDEN: Final = Disconnect(CLOSE_FORBIDDEN, "forbidden", Reconnect.STOP)

    @classmethod
    def all(cls) -> tuple[Disconnect, ...]:
        """Every named disconnect, in declaration order."""
        return tuple(v for v in vars(cls).values() if isinstance(v, Disconnect))


_RULE_BY_CODE: Final[dict[int, Reconnect]] = {
    CLOSE_GOING_AWAY: Reconnect.SOON,
    **{d.code: d.reconnect for d in Disconnects.all()},
}
_NAME_BY_CODE: Final[dict[int, str]] = {
    CLOSE_GOING_AWAY: "going away",
    1006: "connection lost",
    CLOSE_POLICY: "policy violation",
    **{d.code: d.reason for d in Disconnects.all() if d.code != CLOSE_POLICY},
}
STOP_HTTP_STATUSES: Final = frozenset({401, 403})
"""Handshake answers after which reconnecting with the same token cannot help."""


def reconnect_after(code: int | None) -> Reconnect:
    """The rule after a close with ``code`` (``None``: lost without a close frame)."""
    if code is None:
        return Reconnect.BACKOFF
    return _RULE_BY_CODE.get(code, Reconnect.BACKOFF)


def reconnect_after_refusal(status: int) -> Reconnect:
    """The rule after the server refused the upgrade with HTTP ``status`` (503 and 429
    mean come back soon; 401/403 mean stop)."""
    if status in STOP_HTTP_STATUSES:
        return Reconnect.STOP
    if status in (429, 503):
        return Reconnect.SOON
    return Reconnect.BACKOFF


def describe_close(code: int | None) -> str:
    """A short description of a close code for logs and messages, e.g. ``1012 (server restart)``."""
    if code is None:
        return "connection lost"
    return f"{code} ({_NAME_BY_CODE.get(code, 'unknown')})"


MAX_RETRY_AFTER_S: Final = 120
"""The longest ``Retry-After`` a client honours: a larger (or hostile) hint is cut to it, so
no answer can park a device for hours."""


def retry_after_s(value: str | None) -> int | None:
    """The seconds of a ``Retry-After`` header in its delta-seconds form, at most
    :data:`MAX_RETRY_AFTER_S`; ``None`` when absent or not a whole number of seconds (the
    HTTP-date form is not used by this server; a client then follows its own rule)."""
    if value is None:
        return None
    value = value.strip()
    if not value.isascii() or not value.isdigit() or len(value) > 9:
        return None
    return min(int(value), MAX_RETRY_AFTER_S)


ErrorCode = Literal[
    "bad_json",
    "bad_message",
    "unknown_op",
    "too_big",
    "rate_limited",
    "forbidden",
    "internal",
    "unavailable",
]


class ProtocolError(Exception):
    """A client message that cannot be understood; ``code`` is sent back in an ``error``."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message


# ---------------------------------------------------------------------------------------
# Client messages


class Power(enum.Enum):
    """How a device wants to be woken: every change at once, or few wake-ups (a battery saver)."""

    NORMAL = "normal"
    SAVER = "saver"


DEFAULT_SAVER_INTERVAL_S: Final = 300.0
"""The interval of ``power: saver`` when the device names none: at most one wake-up per five
minutes for changes that do not matter at once."""
MIN_SAVER_INTERVAL_S: Final = 1.0
MAX_SAVER_INTERVAL_S: Final = 3600.0


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """A device's delivery policy: ``power`` and, in saver mode, the least number of seconds
    between two wake-ups for changes that can wait (``min_interval_s``; 0 in normal mode)."""

    power: Power = Power.NORMAL
    min_interval_s: float = 0.0

    def encode(self) -> str:
        """The ``policy`` message confirming this policy to the device."""
        return encode(
            {"op": "policy", "power": self.power.value, "min_interval_s": self.min_interval_s}
        )


NORMAL_DELIVERY: Final = DeliveryPolicy()


@dataclass(frozen=True, slots=True)
class Hello:
    client: str
    since: int | None = None
    policy: DeliveryPolicy | None = None
    """The delivery policy stated with the hello (``None``: keep the connection's)."""


@dataclass(frozen=True, slots=True)
class SetPolicy:
    """A ``policy`` message: the device changes its delivery policy."""

    policy: DeliveryPolicy


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why frame ``index`` of a batch was not accepted."""

    index: int
    field: str
    reason: str


@dataclass(frozen=True, slots=True)
class FrameBatch:
    """A ``frames`` message: the valid frames, and a rejection per invalid one."""

    seq: int
    frames: tuple[Frame, ...]
    rejected: tuple[Rejection, ...] = ()


@dataclass(frozen=True, slots=True)
class Subscribe:
    user_id: str | None = None


@dataclass(frozen=True, slots=True)
class Ping:
    t: float


@dataclass(frozen=True, slots=True)
class Seen:
    """A device has shown ``version`` of its user's state (``kind``: ``phone`` or ``watch``;
    ``None``: the kind of the connection's token). A bridge reports for itself and for each
    device it relays to."""

    device: str
    version: int
    kind: str | None = None


@dataclass(frozen=True, slots=True)
class CommandResult:
    """A device's answer to command ``id``: ``done``, ``dismissed`` or ``expired``
    (``device``: who answered, if not the connection itself)."""

    id: str
    outcome: str
    device: str | None = None


ClientMessage = Hello | FrameBatch | Subscribe | Ping | SetPolicy | Seen | CommandResult

MAX_VERSION: Final = 2**53
"""The largest version a client may name (stores and JavaScript hold it exactly)."""
SEEN_KINDS: Final = frozenset({"phone", "watch"})
"""The device kinds a ``seen`` may name."""
COMMAND_OUTCOMES: Final = frozenset({"done", "dismissed", "expired"})
"""The answers a device may give to a command."""
_COMMAND_ID_RE: Final = re.compile(r"^c[0-9a-f]{20}$")


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
_DEVICE_RE: Final = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_USER_RE: Final = re.compile(r"^[A-Za-z0-9._@:-]{1,128}$")


def valid_user_id(user_id: str) -> bool:
    """Whether ``user_id`` has the allowed shape (1-128 of ``A-Za-z0-9._@:-``)."""
    return _USER_RE.match(user_id) is not None


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
        if not isinstance(device, str) or not _DEVICE_RE.match(device):
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
        if not _DEVICE_RE.match(device):
            return None
        devices.add(device)
    seq = get("seq")
    if seq is None:
        seq = 0
    elif type(seq) is not int or not 0 <= seq <= _MAX_SEQ:
        return None
    return new_frame(ts, hr, hrv, steps, spo2, skin_temp, resp_rate, device, seq, env)


def _int_field(message: Mapping[str, Any], name: str, *, required: bool) -> int | None:
    value = message.get(name)
    if value is None:
        if required:
            raise ProtocolError("bad_message", f"'{name}' is required")
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProtocolError("bad_message", f"'{name}' must be a non-negative integer")
    return value


def _policy(message: Mapping[str, Any], *, required: bool) -> DeliveryPolicy | None:
    """The delivery policy of a ``hello`` or ``policy`` message (``None``: not stated).

    Raises :class:`ProtocolError` (``bad_message``) for an unknown ``power``, an interval
    out of range or an interval given with ``power: normal``.
    """
    power = message.get("power")
    interval = message.get("min_interval_s")
    if power is None:
        if required or interval is not None:
            raise ProtocolError("bad_message", "'power' must be 'normal' or 'saver'")
        return None
    if power not in ("normal", "saver"):
        raise ProtocolError("bad_message", "'power' must be 'normal' or 'saver'")
    if power == "normal":
        if interval is not None:
            raise ProtocolError("bad_message", "'min_interval_s' applies to 'saver' only")
        return NORMAL_DELIVERY
    if interval is None:
        return DeliveryPolicy(Power.SAVER, DEFAULT_SAVER_INTERVAL_S)
    if isinstance(interval, bool) or not isinstance(interval, int | float):
        raise ProtocolError("bad_message", "'min_interval_s' must be a number")
    if not MIN_SAVER_INTERVAL_S <= interval <= MAX_SAVER_INTERVAL_S:
        raise ProtocolError(
            "bad_message",
            f"'min_interval_s' must lie in {MIN_SAVER_INTERVAL_S:g}..{MAX_SAVER_INTERVAL_S:g}",
        )
    return DeliveryPolicy(Power.SAVER, float(interval))


def parse_client_message(
    data: str | bytes, *, now_ms: int, limits: FrameLimits | None = None
) -> ClientMessage:
    """Parse one text message from a client.

    Raises :class:`ProtocolError`: ``too_big`` over :data:`MAX_MESSAGE_BYTES`, ``bad_json``
    for text that is not a JSON object, ``unknown_op``, or ``bad_message`` for a known op
    with wrong fields (a ``policy`` that is not one, see :func:`_policy`).
    """
    if len(data) > MAX_MESSAGE_BYTES:
        raise ProtocolError(
            "too_big", f"message of {len(data)} bytes (at most {MAX_MESSAGE_BYTES})"
        )
    try:
        message = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError("bad_json", f"not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError("bad_json", f"expected a JSON object, got {type(message).__name__}")
    op = message.get("op")
    if op == "frames":
        seq = _int_field(message, "seq", required=True)
        assert seq is not None
        frames, rejected = parse_frames(
            message.get("frames"), now_ms=now_ms, limits=limits or FrameLimits()
        )
        return FrameBatch(seq, frames, rejected)
    if op == "hello":
        client = message.get("client", "unknown")
        if not isinstance(client, str) or len(client) > 128:
            raise ProtocolError("bad_message", "'client' must be a string of at most 128 chars")
        since = _int_field(message, "since", required=False)
        return Hello(client, since, _policy(message, required=False))
    if op == "policy":
        policy = _policy(message, required=True)
        assert policy is not None
        return SetPolicy(policy)
    if op == "ping":
        t = message.get("t", 0)
        if isinstance(t, bool) or not isinstance(t, int | float):
            raise ProtocolError("bad_message", "'t' must be a number")
        return Ping(float(t))
    if op == "subscribe":
        user_id = message.get("user_id")
        if user_id is not None and not (isinstance(user_id, str) and valid_user_id(user_id)):
            raise ProtocolError("bad_message", "'user_id' must be a valid user id")
        return Subscribe(user_id)
    if op == "seen":
        return _seen(message)
    if op == "command_result":
        return _command_result(message)
    if not isinstance(op, str):
        raise ProtocolError("bad_message", "'op' is required and must be a string")
    raise ProtocolError("unknown_op", f"unknown op {op[:32]!r}")


def _device_field(message: Mapping[str, Any], *, required: bool) -> str | None:
    device = message.get("device")
    if device is None and not required:
        return None
    if not isinstance(device, str) or not _DEVICE_RE.match(device):
        raise ProtocolError("bad_message", "'device' must be 1-64 of A-Z a-z 0-9 . _ : -")
    return device


def _seen(message: Mapping[str, Any]) -> Seen:
    device = _device_field(message, required=True)
    assert device is not None
    version = _int_field(message, "version", required=True)
    assert version is not None
    if version > MAX_VERSION:
        raise ProtocolError("bad_message", "'version' is not a version of this server")
    kind = message.get("kind")
    if kind is not None and kind not in SEEN_KINDS:
        raise ProtocolError("bad_message", "'kind' must be 'phone' or 'watch'")
    return Seen(device, version, kind)


def _command_result(message: Mapping[str, Any]) -> CommandResult:
    command_id = message.get("id")
    if not isinstance(command_id, str) or not _COMMAND_ID_RE.match(command_id):
        raise ProtocolError("bad_message", "'id' must be a command id")
    outcome = message.get("outcome")
    if outcome not in COMMAND_OUTCOMES:
        raise ProtocolError("bad_message", "'outcome' must be done, dismissed or expired")
    return CommandResult(command_id, str(outcome), _device_field(message, required=False))


# ---------------------------------------------------------------------------------------
# Server messages


@dataclass(frozen=True, slots=True)
class Delta:
    """A change of one user's state: what changed on top of version ``base``.

    ``base`` is normally ``version - 1``; a coalesced delta (several changes merged in a slow
    client's outbox) spans more. A client whose version is not ``base`` asks for a snapshot.
    """

    user_id: str
    version: int
    base: int
    state_hash: str
    changes: Mapping[str, Any]
    t: float

    def merged_after(self, older: Delta) -> Delta:
        """This delta folded onto an older, not yet sent one of the same user."""
        return Delta(
            self.user_id,
            self.version,
            min(self.base, older.base),
            self.state_hash,
            {**older.changes, **self.changes},
            self.t,
        )

    def encode(self) -> str:
        return encode(
            {
                "op": "delta",
                "user_id": self.user_id,
                "version": self.version,
                "base": self.base,
                "state_hash": self.state_hash,
                "changes": self.changes,
                "t": self.t,
            }
        )


def encode(message: Mapping[str, Any]) -> str:
    """Encode a server message as JSON text."""
    return orjson.dumps(message).decode()


def text_frame(payload: bytes) -> bytes:
    """``payload`` (UTF-8 text) as one complete, unmasked WebSocket text frame (RFC 6455 5.2).

    Server-to-client frames carry no mask, so these bytes are the same for every socket: a
    message pushed to many clients is framed once. Not for connections that negotiated an
    extension (permessage-deflate is off on this server).
    """
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 1 << 16:
        return bytes((0x81, 126)) + size.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + size.to_bytes(8, "big") + payload


def decode_server_message(data: str | bytes) -> dict[str, Any]:
    """Decode a server message (for clients). Raises :class:`ProtocolError` on bad JSON."""
    try:
        message = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError("bad_json", f"not JSON: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise ProtocolError("bad_message", "expected a JSON object with an 'op'")
    return message


def delta_from_message(message: Mapping[str, Any]) -> Delta:
    """Rebuild a :class:`Delta` from its decoded JSON (as a broker or a client receives it)."""
    try:
        return Delta(
            str(message["user_id"]),
            int(message["version"]),
            int(message.get("base", int(message["version"]) - 1)),
            str(message["state_hash"]),
            dict(message["changes"]),
            float(message["t"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError("bad_message", f"not a delta: {exc!r}") from None


def encode_snapshot(state: Mapping[str, Any]) -> str:
    """A ``snapshot`` message from a mapping holding :data:`SNAPSHOT_FIELDS`."""
    return encode({"op": "snapshot", **{name: state[name] for name in SNAPSHOT_FIELDS}})


def encode_uptodate(version: int, state_hash: str) -> str:
    return encode({"op": "uptodate", "version": version, "state_hash": state_hash})


def encode_ack(seq: int, accepted: int, rejected: Sequence[Rejection]) -> str:
    return encode(
        {
            "op": "ack",
            "seq": seq,
            "accepted": accepted,
            "rejected": [
                {"index": r.index, "field": r.field, "reason": r.reason} for r in rejected
            ],
        }
    )


def encode_pong(t: float, server_t: float) -> str:
    return encode({"op": "pong", "t": t, "server_t": server_t})


def encode_commands(user_id: str, commands: Sequence[Mapping[str, Any]]) -> str:
    """A ``commands`` message: commands of ``user_id``'s actions, each ``{id, kind, params,
    version, issued_at, expires_at, outcome}`` (sent after the delta that issued them, and
    after ``hello`` while they are pending)."""
    return encode({"op": "commands", "user_id": user_id, "commands": list(commands)})


def encode_command_ack(command_id: str, outcome: str) -> str:
    """The answer to a ``command_result``: the outcome the server holds (the first one
    recorded, so a repeated or late answer learns what counts)."""
    return encode({"op": "command_ack", "id": command_id, "outcome": outcome})


def encode_error(code: ErrorCode, message: str) -> str:
    return encode({"op": "error", "code": code, "message": message})


@dataclass(frozen=True, slots=True)
class FramesSummary:
    """What debug subscribers see of ingested frames: count and the latest readings."""

    user_id: str
    count: int
    points: tuple[Mapping[str, float | int | None], ...] = field(default_factory=tuple)

    def encode(self) -> str:
        return encode(
            {"op": "frames", "user_id": self.user_id, "count": self.count, "points": self.points}
        )


def summarize(user_id: str, frames: Sequence[Frame], *, max_points: int = 20) -> FramesSummary:
    """The newest ``max_points`` frames reduced to ts, hr, hrv and steps, for live charts."""
    newest = sorted(frames, key=lambda f: f.ts)[-max_points:]
    points = tuple({"ts": f.ts, "hr": f.hr, "hrv": f.hrv, "steps": f.steps} for f in newest)
    return FramesSummary(user_id, len(frames), points)


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
            "device": {"type": "string", "pattern": _DEVICE_RE.pattern},
            "seq": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
            "env": env,
        },
        "additionalProperties": False,
        "anyOf": [{"required": [name]} for name in measurements],
        "description": "one sensor sample; at least one measurement besides ts",
    }


USER_ID_PATTERN: Final = _USER_RE.pattern
"""The shape of a user id (:func:`valid_user_id`), for documents that describe it."""
