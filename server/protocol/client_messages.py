"""What clients send: ``hello``, ``frames``, ``subscribe``, ``ping``, ``policy``, ``seen``
and ``command_result``, parsed into typed messages (:func:`parse_client_message`), and the
shape of the identifiers they carry. Clients reach it through :mod:`server.protocol`.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from brain.model import Frame
from server.protocol.codes import ProtocolError
from server.protocol.frames import DEVICE_RE, FrameLimits, Rejection, parse_frames
from server.protocol.server_messages import encode

MAX_MESSAGE_BYTES: Final = 64 * 1024

_USER_RE: Final = re.compile(r"^[A-Za-z0-9._@:-]{1,128}$")


def valid_user_id(user_id: str) -> bool:
    """Whether ``user_id`` has the allowed shape (1-128 of ``A-Za-z0-9._@:-``)."""
    return _USER_RE.match(user_id) is not None


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


USER_ID_PATTERN: Final = _USER_RE.pattern
"""The shape of a user id (:func:`valid_user_id`), for documents that describe it."""
