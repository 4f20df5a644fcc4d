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
from typing import Any, Final

import orjson

from brain.model import SNAPSHOT_FIELDS as SNAPSHOT_FIELDS, Frame
from server.protocol.codes import (
    CLOSE_BAD_DATA as CLOSE_BAD_DATA,
    CLOSE_FORBIDDEN as CLOSE_FORBIDDEN,
    CLOSE_GOING_AWAY as CLOSE_GOING_AWAY,
    CLOSE_INTERNAL as CLOSE_INTERNAL,
    CLOSE_NORMAL as CLOSE_NORMAL,
    CLOSE_POLICY as CLOSE_POLICY,
    CLOSE_PROTOCOL_ERROR as CLOSE_PROTOCOL_ERROR,
    CLOSE_RESTART as CLOSE_RESTART,
    CLOSE_TOKEN_EXPIRED as CLOSE_TOKEN_EXPIRED,
    CLOSE_TOO_BIG as CLOSE_TOO_BIG,
    CLOSE_TRY_LATER as CLOSE_TRY_LATER,
    MAX_RETRY_AFTER_S as MAX_RETRY_AFTER_S,
    STOP_HTTP_STATUSES as STOP_HTTP_STATUSES,
    Disconnect as Disconnect,
    Disconnects as Disconnects,
    ErrorCode as ErrorCode,
    ProtocolError as ProtocolError,
    Reconnect as Reconnect,
    describe_close as describe_close,
    reconnect_after as reconnect_after,
    reconnect_after_refusal as reconnect_after_refusal,
    retry_after_s as retry_after_s,
)
from server.protocol.frames import (
    DEFAULT_MAX_AGE_MS as DEFAULT_MAX_AGE_MS,
    DEFAULT_MAX_FUTURE_MS as DEFAULT_MAX_FUTURE_MS,
    DEVICE_RE as DEVICE_RE,
    MAX_FRAMES_PER_MESSAGE as MAX_FRAMES_PER_MESSAGE,
    REJECTION_FIELDS as REJECTION_FIELDS,
    FrameLimits as FrameLimits,
    Rejection as Rejection,
    frame_json_schema as frame_json_schema,
    frame_to_wire as frame_to_wire,
    parse_frame as parse_frame,
    parse_frames as parse_frames,
)

VERSION: Final = 1
MAX_MESSAGE_BYTES: Final = 64 * 1024

_USER_RE: Final = re.compile(r"^[A-Za-z0-9._@:-]{1,128}$")


def valid_user_id(user_id: str) -> bool:
    """Whether ``user_id`` has the allowed shape (1-128 of ``A-Za-z0-9._@:-``)."""
    return _USER_RE.match(user_id) is not None


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
    if not isinstance(device, str) or not DEVICE_RE.match(device):
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


USER_ID_PATTERN: Final = _USER_RE.pattern
"""The shape of a user id (:func:`valid_user_id`), for documents that describe it."""
