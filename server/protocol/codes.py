"""Error and close codes of the wire protocol, and what a client does after each.

The ``error`` codes a server sends (:data:`ErrorCode`, raised as :class:`ProtocolError`), the
WebSocket close codes it closes with (RFC 6455 and the application range) and their names,
the reconnect rule each one implies (:class:`Reconnect`), and the ``Retry-After`` hint of a
refusal. Clients reach them through :mod:`server.protocol`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, Literal

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
