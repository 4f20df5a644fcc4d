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

An appointment is kept for the device it was given to: the handshake's credentials (the
``Authorization`` header or the ``token`` query parameter, hashed, not verified: that is
the costly part) name it, and when it comes back at its time it is let in even if the
bucket is empty at that moment: its place was reserved. Without that, the chance
bunching of appointments within a second refused some of them again and sent them to the
end of the queue, so a storm lasted longer than N / rate and the burst had to stay large
enough to absorb the bunching. A device that comes back early is given the same
appointment again, unless there is room before it.

A node going down gracefully spreads its clients' return the same way from the other side:
each connection is closed (1012) at a random moment of :func:`drain_window`.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from typing import Final

from server.protocol import MAX_RETRY_AFTER_S
from server.ratelimit import TokenBucket

ADMISSION_REFUSED: Final = "try later"
"""The ``reason`` label of ``companion_handshake_rejects_total`` for a handshake refused by
admission control (a fixed label, never the client's)."""
EARLY_S: Final = 1.5
"""How long before its appointment a device is let in: the client comes back within a
second of it (its jitter), and the rest is slack for the network."""
LATE_S: Final = 10.0
"""How long after its appointment a device's reservation is kept."""
MAX_APPOINTMENTS: Final = 65_536
"""Reservations kept at most (about 0.1 KB each): more than a node's fleet; beyond it a
refused handshake still gets its hint, without a reservation."""

_AUTHORIZATION = re.compile(rb"\r\nauthorization:[ \t]*([^\r\n]*)", re.IGNORECASE)
_TOKEN_QUERY = re.compile(rb"[?&]token=([^&# \r\n]*)")


def device_key(head: bytes) -> int | None:
    """Who a handshake request ``head`` is from, for its appointment: a hash of its
    credentials (``Authorization`` header, else the ``token`` query parameter of the request
    line), not verified; ``None`` if it has none."""
    if (found := _AUTHORIZATION.search(head)) is not None:
        return hash(found.group(1).strip())
    line_end = head.find(b"\r\n")
    if (
        found := _TOKEN_QUERY.search(head, 0, line_end if line_end >= 0 else len(head))
    ) is not None:
        return hash(found.group(1))
    return None


class Admission:
    """Admits handshakes at ``rate`` a second (bursts of ``burst``) and gives the excess a
    time to come back, reserved for it. Raises :class:`ValueError` for a rate or burst that
    is not positive."""

    __slots__ = ("_appointments", "_bucket", "_next_slot", "rate")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"need rate > 0 and burst >= 1, got rate={rate} burst={burst}")
        self.rate = rate
        self._bucket = TokenBucket(rate, burst, now)
        self._next_slot = now
        """The time of the next free appointment (the tail of the virtual queue)."""
        self._appointments: OrderedDict[int, float] = OrderedDict()
        """Device key -> its appointment, in the order given (so by time)."""

    def admit(self, now: float, device: int | None = None) -> int | None:
        """``None`` if a handshake may proceed at ``now``; else the whole seconds of its
        ``Retry-After`` (0 to :data:`~server.protocol.MAX_RETRY_AFTER_S`). ``device``: who
        asks (:func:`device_key`), so that an appointment is kept for it."""
        if device is not None and (slot := self._appointments.get(device)) is not None:
            # On time it is let in whatever the bucket says (its place was kept), but counts
            # against the rate; early, only if the bucket has room, else it keeps its time.
            if self._bucket.take(now) or now >= slot - EARLY_S:
                del self._appointments[device]
                return None
            return math.floor(slot - now)
        if self._bucket.take(now):
            return None
        # Appointments are one admit interval apart, from now or from the last one given.
        slot = max(self._next_slot, now) + 1.0 / self.rate
        slot = min(slot, now + MAX_RETRY_AFTER_S)
        self._next_slot = slot
        if device is not None:
            self._keep(device, slot, now)
        # The client comes back within a second after the whole seconds it is told
        # (its jitter), so the floor puts it in the second of its slot.
        return math.floor(slot - now)

    def _keep(self, device: int, slot: float, now: float) -> None:
        appointments = self._appointments
        while appointments:  # forget the appointments nobody came back for
            oldest, when = next(iter(appointments.items()))
            if when + LATE_S >= now:
                break
            del appointments[oldest]
        if len(appointments) < MAX_APPOINTMENTS:
            appointments[device] = slot

    def backlog_s(self, now: float) -> float:
        """Seconds of appointments given out beyond ``now`` (0: nobody is waiting)."""
        return max(0.0, self._next_slot - now)

    @property
    def reserved(self) -> int:
        """Appointments kept for devices that have not come back yet."""
        return len(self._appointments)


def drain_window(connections: int, drain_s: float, admit_rate: float) -> float:
    """The window over which a graceful stop closes ``connections`` clients: long enough for
    them to return at ``admit_rate`` (a peer node takes them at that rate), at most
    ``drain_s`` (the stop must end within its grace period)."""
    if connections <= 0 or admit_rate <= 0:
        return 0.0
    return min(drain_s, connections / admit_rate)
