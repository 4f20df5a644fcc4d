"""Reconnect-storm control: how many WebSocket handshakes a node takes, and when the rest
come back. Pure: time and random draws are passed in.

When a node restarts, or a neighbour goes down, its whole fleet reconnects at once. Every
handshake costs a token check, a state read and a snapshot; taken all together they starve
the pushes of the devices that are already connected. :class:`Admission` lets
``COMPANION_ADMIT_RATE`` handshakes a second through (a token bucket with
``COMPANION_ADMIT_BURST`` saved) and answers the excess at once, before the token is even
verified, with ``503`` and ``Retry-After: S``: an appointment. Successive refusals are given
successive slots at the admit rate (a virtual queue), so 20,000 phones refused in the same
second are told to come back over the next 20,000 / rate seconds instead of all together in
one second; a client waits ``S`` plus a jitter of up to one second
(:class:`clients.connect.failover.Failover`), which spreads each second's appointments
over that second.

A node going down gracefully spreads its clients' return the same way from the other side:
each connection is closed (1012) at a random moment of :func:`drain_window`.
"""

from __future__ import annotations

import math
from typing import Final

from server.protocol import MAX_RETRY_AFTER_S
from server.ratelimit import TokenBucket

ADMISSION_REFUSED: Final = "try later"
"""The ``reason`` label of ``companion_handshake_rejects_total`` for a handshake refused by
admission control (a fixed label, never the client's)."""


class Admission:
    """Admits handshakes at ``rate`` a second (bursts of ``burst``) and gives the excess a
    time to come back. Raises :class:`ValueError` for a rate or burst that is not positive."""

    __slots__ = ("_bucket", "_next_slot", "rate")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"need rate > 0 and burst >= 1, got rate={rate} burst={burst}")
        self.rate = rate
        self._bucket = TokenBucket(rate, burst, now)
        self._next_slot = now
        """The time of the next free appointment (the tail of the virtual queue)."""

    def admit(self, now: float) -> int | None:
        """``None`` if a handshake may proceed at ``now``; else the whole seconds of its
        ``Retry-After`` (0 to :data:`~server.protocol.MAX_RETRY_AFTER_S`)."""
        if self._bucket.take(now):
            return None
        # Appointments are one admit interval apart, from now or from the last one given.
        slot = max(self._next_slot, now) + 1.0 / self.rate
        slot = min(slot, now + MAX_RETRY_AFTER_S)
        self._next_slot = slot
        # The client comes back within a second after the whole seconds it is told
        # (its jitter), so the floor puts it in the second of its slot.
        return math.floor(slot - now)

    def backlog_s(self, now: float) -> float:
        """Seconds of appointments given out beyond ``now`` (0: nobody is waiting)."""
        return max(0.0, self._next_slot - now)


def drain_window(connections: int, drain_s: float, admit_rate: float) -> float:
    """The window over which a graceful stop closes ``connections`` clients: long enough for
    them to return at ``admit_rate`` (a peer node takes them at that rate), at most
    ``drain_s`` (the stop must end within its grace period)."""
    if connections <= 0 or admit_rate <= 0:
        return 0.0
    return min(drain_s, connections / admit_rate)
