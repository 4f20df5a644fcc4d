"""The penalty box: a peer address closed for abuse again and again is refused for a while.

Admission control (:mod:`server.push.admission`) meters handshakes, but it cannot tell a
phone coming back after a restart from a flooder that is closed for too many fragments and
reconnects at once, a thousand times a second, each time paying a handshake and a token
check. :class:`PenaltyBox` remembers addresses that were closed for *abuse*
(:data:`ABUSE_REASONS`: bad framing, a rate limit, too many fragments or protocol errors, a
message or request head too big, a handshake that never finished, an invalid token). After
``strikes`` such closes within ``window_s`` an address is *boxed*: its new connections are
refused from ``connection_made``, before a byte is parsed, for ``first_s`` (the edge holds
each refused socket unread for up to :data:`REFUSAL_HOLD_S`, then answers ``503``); each
further round of ``strikes`` doubles the period, up to ``max_s``; an address that behaves
falls one level per ``max_s`` without abuse and is forgotten at level 0.

Shared addresses (carrier NAT: thousands of phones behind one IPv4 address) are why one
abuse close is not enough: the box acts on a *rate* of abuse closes, its periods are short
(seconds), connections already open are never touched, and a refusal says when to come back
(``503`` with ``Retry-After``), so the neighbours of an abuser lose at most a reconnect of a
few seconds. IPv6 peers are boxed by their /64 (one subscriber's prefix: an attacker owns
all of it). Memory is bounded: at most :data:`MAX_ADDRESSES` suspects (addresses with
strikes) and as many boxed addresses, the oldest dropped first; suspects are dropped before
any boxed address, so an attacker with many addresses cannot flush the box.

The box itself is pure: time is passed in. The wiring at the end (:func:`refusal`,
:func:`report`) finds a node's box in its services and counts what it does in the node's
metrics.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

from server.protocol import MAX_RETRY_AFTER_S, Disconnects
from server.services import PartKey, Services

log = logging.getLogger(__name__)

ABUSE_REASONS: Final = frozenset(
    {
        # Closes of an open WebSocket (server.protocol.Disconnects).
        Disconnects.PROTOCOL_ERROR.reason,
        Disconnects.BAD_UTF8.reason,
        Disconnects.RATE_LIMIT.reason,
        Disconnects.PROTOCOL_ERRORS.reason,
        Disconnects.TOO_MANY_SUBSCRIPTIONS.reason,
        Disconnects.FRAGMENTED.reason,
        Disconnects.TOO_BIG.reason,
        # Refusals before a WebSocket was open (companion_handshake_rejects reasons).
        "timeout",
        "uri too long",
        "headers too large",
        "bad request",
        "TokenInvalid",
    }
)
"""The closes that count as abuse: what a working client never causes. Not abuse: a slow
consumer (a phone on a bad network), an expired or missing token, a restart, a refusal by
admission control."""
PENALTY_REFUSED: Final = "penalty"
"""The ``reason`` label of ``companion_handshake_rejects_total`` for a connection refused
because its address is in the box."""
MAX_ADDRESSES: Final = 10_000
"""Addresses kept in each of the two tables (suspects, boxed): about 2 MB at most."""
REFUSAL_HOLD_S: Final = 1.0
"""Longest time a refused connection is held, unread, before its 503: an attacker that comes
straight back is slowed to one attempt per hold and connection, and a held socket costs no
more than an idle one."""
MAX_HOLDING: Final = 4096
"""Refused connections held at once (about 10 MB and as many file descriptors at most);
beyond, a refusal is answered at once."""
SUMMARY_S: Final = 60.0
"""Seconds between two log lines of what the box did (never an address)."""


@dataclass(frozen=True, slots=True)
class PenaltyPolicy:
    """When an address is boxed and for how long (``COMPANION_PENALTY_*``).

    ``first_s``: the first period (0: the box is off); ``max_s``: the longest; ``strikes``
    abuse closes within ``window_s`` box an address (again).
    """

    first_s: float
    max_s: float
    strikes: int
    window_s: float

    @property
    def enabled(self) -> bool:
        return self.first_s > 0

    def period_s(self, level: int) -> float:
        """The period of the ``level``-th penalty in a row (1: the first)."""
        return min(self.max_s, self.first_s * 2.0 ** min(level - 1, 62))


@dataclass(frozen=True, slots=True)
class Summary:
    """What the box did since the last summary."""

    refused: int
    boxed: int
    held: int
    """Addresses boxed at the moment."""
    seconds: float


class _Record:
    """One address: strikes in the current window, and its penalty level."""

    __slots__ = ("level", "quiet_from", "strikes", "until", "window_end")

    def __init__(self, now: float, window_s: float) -> None:
        self.level = 0
        self.strikes = 0
        self.window_end = now + window_s
        self.until = 0.0
        """End of the current penalty (in the past: none)."""
        self.quiet_from = now
        """Since when the address has not been boxed (its level decays from then)."""


class PenaltyBox:
    """Addresses closed for abuse, and for how long each is refused. Keys are
    :func:`address_key` values (the caller turns a peer name into one)."""

    __slots__ = (
        "_boxed",
        "_capacity",
        "_refused",
        "_since",
        "_suspects",
        "_times_boxed",
        "holding",
        "policy",
    )

    def __init__(self, policy: PenaltyPolicy, now: float, capacity: int = MAX_ADDRESSES) -> None:
        self.policy = policy
        self._capacity = capacity
        self._suspects: OrderedDict[str, _Record] = OrderedDict()
        """Addresses with strikes that were never boxed, oldest window first."""
        self._boxed: OrderedDict[str, _Record] = OrderedDict()
        """Addresses boxed now or with a level left, least recently boxed first."""
        self._refused = 0
        self._times_boxed = 0
        self._since = now
        self.holding = 0
        """Refused connections held now (the edge counts them: :data:`MAX_HOLDING`)."""

    def __len__(self) -> int:
        """Addresses the box remembers (suspects and boxed)."""
        return len(self._suspects) + len(self._boxed)

    def refusal(self, key: str, now: float) -> float | None:
        """Seconds ``key`` stays refused if it is boxed at ``now`` (a new connection from it
        is to be refused), else ``None``. One dictionary read: cheap enough for every
        accepted connection."""
        record = self._boxed.get(key)
        if record is None or record.until <= now:
            return None
        self._refused += 1
        return record.until - now

    def strike(self, key: str, now: float) -> bool:
        """Record an abuse close of ``key`` at ``now``; ``True`` if it boxed the address."""
        policy = self.policy
        if not policy.enabled:
            return False
        self._prune(now)
        record = self._boxed.get(key)
        suspect = record is None
        if record is None:
            record = self._suspects.get(key)
            if record is None:
                record = self._suspects[key] = _Record(now, policy.window_s)
                if len(self._suspects) > self._capacity:
                    self._suspects.popitem(last=False)
        elif record.until > now:
            return False  # boxed already (a connection opened before the box closed)
        if record.window_end <= now:
            record.strikes = 0
            record.window_end = now + policy.window_s
            if suspect:
                self._suspects.move_to_end(key)
        record.strikes += 1
        if record.strikes < policy.strikes:
            return False
        # Boxed: one level up from what is left of the last one.
        record.level = self._level(record, now) + 1
        record.strikes = 0
        record.until = record.quiet_from = now + policy.period_s(record.level)
        record.window_end = record.until + policy.window_s
        if suspect:
            del self._suspects[key]
        self._boxed[key] = record
        self._boxed.move_to_end(key)
        if len(self._boxed) > self._capacity:
            self._boxed.popitem(last=False)
        self._times_boxed += 1
        return True

    def boxed(self, now: float) -> int:
        """Addresses refused at ``now``."""
        return sum(1 for record in self._boxed.values() if record.until > now)

    def summary(self, now: float) -> Summary | None:
        """What the box did in the last :data:`SUMMARY_S` or more, once that time has passed
        and if it did anything; then it starts counting again."""
        if now - self._since < SUMMARY_S:
            return None
        refused, boxed, seconds = self._refused, self._times_boxed, now - self._since
        self._refused = self._times_boxed = 0
        self._since = now
        if not refused and not boxed:
            return None
        return Summary(refused, boxed, self.boxed(now), seconds)

    def _level(self, record: _Record, now: float) -> int:
        """``record``'s level at ``now``: one less for each ``max_s`` without a penalty."""
        quiet = max(0.0, now - record.quiet_from)
        return max(0, record.level - math.floor(quiet / self.policy.max_s))

    def _prune(self, now: float) -> None:
        """Forget a few addresses with nothing left to remember (amortised: two per call)."""
        for _ in range(2):
            if self._suspects:
                key, record = next(iter(self._suspects.items()))
                if record.window_end <= now:
                    del self._suspects[key]
            if self._boxed:
                key, record = next(iter(self._boxed.items()))
                if record.until <= now and self._level(record, now) == 0:
                    del self._boxed[key]


def address_key(host: str) -> str:
    """The key of a peer address: an IPv4 address as it is (an IPv4-mapped IPv6 address as
    its IPv4 address), an IPv6 address as its /64 prefix (``2001:db8:1:2::/64``)."""
    if ":" not in host:
        return host
    if host.startswith("::ffff:") and "." in host:
        return host[7:]
    try:
        packed = socket.inet_pton(socket.AF_INET6, host.split("%", 1)[0])
    except OSError:
        return host
    prefix = packed[:8] + bytes(8)
    return socket.inet_ntop(socket.AF_INET6, prefix) + "/64"


def peer_key(peername: object) -> str | None:
    """The :func:`address_key` of a transport's ``peername``; ``None`` if it is not an
    internet address (a Unix socket: nothing to box)."""
    if isinstance(peername, tuple) and peername and isinstance(peername[0], str):
        return address_key(peername[0])
    return None


def retry_after(remaining_s: float) -> int:
    """The ``Retry-After`` seconds of a refusal with ``remaining_s`` of penalty left."""
    return max(1, min(MAX_RETRY_AFTER_S, math.ceil(remaining_s)))


# -- wiring: one box per node, in its services ---------------------------------------------

PENALTY_BOX: Final[PartKey[PenaltyBox]] = PartKey("penalty box")
"""Key of the node's :class:`PenaltyBox` in ``Services.parts``."""


def box_of(services: Services) -> PenaltyBox | None:
    """The node's penalty box, made on first use from the settings; ``None`` when it is off
    (``COMPANION_PENALTY_S=0``)."""
    settings = services.settings
    if settings.penalty_s <= 0:
        return None
    found = services.parts.get(PENALTY_BOX)
    if found is not None:
        return found
    policy = PenaltyPolicy(
        settings.penalty_s,
        settings.penalty_max_s,
        settings.penalty_strikes,
        settings.penalty_window_s,
    )
    box = PenaltyBox(policy, services.clock())
    services.parts.add(PENALTY_BOX, box)
    services.metrics.penalty_box_addresses.set_function(lambda: box.boxed(services.clock()))
    return box


def refusal(services: Services, peername: object) -> float | None:
    """The seconds of penalty left if a new connection from ``peername`` is to be refused
    (counted as a refusal), ``None`` to serve it."""
    box = box_of(services)
    key = peer_key(peername)
    if box is None or key is None:
        return None
    now = services.clock()
    remaining = box.refusal(key, now)
    if remaining is None:
        return None
    services.metrics.handshake_rejects.labels(PENALTY_REFUSED).inc()
    _summarise(box, now)
    return remaining


def report(services: Services, transport: asyncio.BaseTransport, reason: str) -> None:
    """Note that the connection on ``transport`` was closed (or refused) for ``reason``: a
    strike against its peer's address if that is abuse (:data:`ABUSE_REASONS`)."""
    if reason not in ABUSE_REASONS:
        return
    box = box_of(services)
    key = peer_key(transport.get_extra_info("peername"))
    if box is None or key is None:
        return
    now = services.clock()
    if box.strike(key, now):
        services.metrics.penalties.labels(reason).inc()
    _summarise(box, now)


def _summarise(box: PenaltyBox, now: float) -> None:
    # One line a minute at most, and never an address: an attacker must not be able to
    # fill the log, and addresses are personal data.
    summary = box.summary(now)
    if summary is not None:
        log.info(
            "penalty box: %d connections refused, %d addresses boxed in the last %.0f s;"
            " %d boxed now",
            summary.refused,
            summary.boxed,
            summary.seconds,
            summary.held,
        )
