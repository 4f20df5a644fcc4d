"""Reconnect policy of the clients: exponential backoff with full jitter, and close codes.

Pure: :class:`Backoff` turns an attempt number and a random draw into a delay, and
:func:`after_close` turns how a connection ended into what to do next (reconnect soon,
reconnect with backoff, or stop). The bridge, the watch and the demo tools inject the
random source and the sleep, so tests make retries instant instead of sleeping.

Full jitter (``uniform(0, min(cap, base * 2**attempt))``) spreads a crowd of phones that
lost the same server over the whole window, so a restarted node is not hit by all of them
in the same millisecond.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from server.protocol import (
    CLOSE_FORBIDDEN,
    CLOSE_RESTART,
    CLOSE_TOKEN_EXPIRED,
)

Random = Callable[[], float]
"""A draw from [0, 1), like :func:`random.random`."""


class Next(enum.Enum):
    """What a client does after its connection ended."""

    SOON = "soon"
    """The server is restarting (1012): come back after a short, jittered pause."""
    BACKOFF = "backoff"
    """Lost or refused for a passing reason: come back after the next backoff delay."""
    STOP = "stop"
    """The server said no for good (expired or forbidden token): stop and say so."""


STOP_CLOSE_CODES = frozenset({CLOSE_TOKEN_EXPIRED, CLOSE_FORBIDDEN})
"""Close codes after which reconnecting cannot help."""
STOP_HTTP_STATUSES = frozenset({401, 403})
"""Handshake answers after which reconnecting cannot help (bad, expired, foreign token)."""


def after_close(code: int | None) -> Next:
    """What to do after a connection closed with ``code`` (``None``: lost without a close)."""
    if code in STOP_CLOSE_CODES:
        return Next.STOP
    if code == CLOSE_RESTART:
        return Next.SOON
    return Next.BACKOFF


def after_refusal(status: int) -> Next:
    """What to do after the server refused the WebSocket upgrade with HTTP ``status``."""
    return Next.STOP if status in STOP_HTTP_STATUSES else Next.BACKOFF


def describe_close(code: int | None) -> str:
    """A short human description of a close code, for logs and error messages."""
    names = {
        None: "connection lost",
        1000: "normal close",
        1001: "server going away",
        1006: "connection lost",
        1008: "policy violation",
        1009: "message too big",
        1011: "server error",
        CLOSE_RESTART: "server restarting",
        CLOSE_TOKEN_EXPIRED: "token expired",
        CLOSE_FORBIDDEN: "forbidden",
    }
    return f"{code} ({names.get(code, 'unknown')})" if code is not None else names[None]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays for reconnect attempt 0, 1, 2…: full jitter under an exponential cap.

    ``soon`` is the window after a 1012 (server restart): short, but still jittered so the
    phones of a restarted node do not all come back at once.
    """

    base: float = 0.5
    cap: float = 30.0
    soon: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.base <= self.cap or self.soon < 0:
            raise ValueError(f"need 0 < base <= cap and soon >= 0, got {self}")

    def ceiling(self, attempt: int) -> float:
        """The largest delay of ``attempt`` (0-based): ``min(cap, base * 2**attempt)``."""
        if attempt < 0:
            raise ValueError(f"attempt must be >= 0, got {attempt}")
        # 2**attempt overflows float past ~1000; the cap is reached long before.
        return min(self.cap, self.base * float(2 ** min(attempt, 64)))

    def delay(self, attempt: int, rand: Random) -> float:
        """A delay drawn uniformly from ``[0, ceiling(attempt))`` (full jitter)."""
        return rand() * self.ceiling(attempt)

    def delay_after(self, next_step: Next, attempt: int, rand: Random) -> float:
        """The pause before reconnecting after ``next_step`` (:class:`Next`).

        Raises :class:`ValueError` for :attr:`Next.STOP`: there is no reconnect to pause for.
        """
        if next_step is Next.STOP:
            raise ValueError("no reconnect after STOP")
        if next_step is Next.SOON:
            return rand() * self.soon
        return self.delay(attempt, rand)
