"""One WebSocket connection's protocol logic, without I/O: frames and messages in, actions out.

The way ``websockets`` keeps its protocol apart from its sockets, :class:`Session` decides
and :class:`server.push.endpoint.Connection` does. The connection hands the session every
frame the client sends (:meth:`Session.on_frame`: rate limit and fragment limits, control
frames included) and every complete message (:meth:`Session.on_message`), and gets back one
action: a :class:`Reply` to send, a :class:`Close` to make, or work that needs the store or
the hub (:class:`Store` a batch of frames, :class:`Join` a user's updates and answer with
their state). The connection reports the outcome of that work back
(:meth:`Session.stored`, :meth:`Session.snapshot`, …), which returns the text to send.
Time is passed in; nothing here awaits, so the tests drive it without an event loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from brain.tiers import Tier
from server import protocol as wire
from server.auth import DeviceKind, Principal
from server.protocol import Delta, Disconnect, Disconnects, FrameBatch, FrameLimits, ProtocolError
from server.push.policy import Pacer
from server.ratelimit import TokenBucket
from server.tiers import TierBook

MAX_ERRORS: Final = 10
"""Protocol errors a connection may make; the next one closes it (1008)."""
MAX_SUBSCRIPTIONS: Final = 1000
MAX_FRAGMENTS: Final = 64
"""Frames one message may be split into (a 64 KiB message needs far fewer); more: 1008."""
MAX_MESSAGE_S: Final = 10.0
"""Seconds from a message's first fragment to its last; longer: 1008 (a message cannot be
used to hold a socket and its buffered fragments open)."""
RATE_CHECK_S: Final = 30.0
"""How often a connection looks up its user's tier again (a tier set while it is open)."""
SERVICE_MAX_AGE_MS: Final = 400 * 24 * 3600 * 1000
"""Service tokens may write old frames (history seeding); devices are held to the setting."""


@dataclass(frozen=True, slots=True)
class Reply:
    """Send ``text`` to the client."""

    text: str


@dataclass(frozen=True, slots=True)
class Close:
    """Close the connection with ``disconnect``, after sending ``text`` if there is one."""

    disconnect: Disconnect
    text: str | None = None


@dataclass(frozen=True, slots=True)
class Store:
    """Make ``batch`` durable, then report with :meth:`Session.stored` or ``not_stored``."""

    batch: FrameBatch


@dataclass(frozen=True, slots=True)
class Join:
    """Deliver ``user_id``'s deltas from now on, read their state, then report with
    :meth:`Session.snapshot` (or :meth:`Session.unavailable` if the state cannot be read)."""

    user_id: str
    since: int | None


@dataclass(frozen=True, slots=True)
class RecordSeen:
    """Note that a device of the connection's user has shown ``seen.version``
    (:meth:`Session.seen_kind` says which kind), then send nothing."""

    seen: wire.Seen


@dataclass(frozen=True, slots=True)
class SettleCommand:
    """Record a device's answer to a command of the connection's user, then send
    :meth:`Session.command_ack` (or :meth:`Session.unknown_command`)."""

    result: wire.CommandResult


Action = Reply | Close | Store | Join | RecordSeen | SettleCommand


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """What one connection may send: a token bucket over every frame, and the frame age.

    ``rate_per_s`` and ``rate_burst`` (``COMPANION_RATE_PER_S`` / ``_BURST``) limit the
    connections of the default tier's users and of service tokens (which are not users).
    With ``tiers`` (the node's tier book), a device of a user of another tier gets that
    tier's :attr:`~brain.tiers.Tier.ws_rate_per_s` and ``ws_rate_burst``, never less than
    the default's (:meth:`rate_of`).
    """

    rate_per_s: float
    rate_burst: int
    max_frame_age_ms: int
    tiers: TierBook | None = None

    def rate_of(self, principal: Principal) -> tuple[float, int]:
        """The rate and burst of ``principal``'s connection."""
        if self.tiers is None or principal.device is DeviceKind.SERVICE:
            return self.rate_per_s, self.rate_burst
        tier = self.tiers.of(principal.user_id)
        if tier is self.tiers.tiers.default:
            return self.rate_per_s, self.rate_burst
        return max(self.rate_per_s, tier.ws_rate_per_s), max(self.rate_burst, tier.ws_rate_burst)


class Session:
    """The protocol state of one connection: limits, subscriptions, versions delivered."""

    __slots__ = (
        "_bucket",
        "_errors",
        "_fragments",
        "_frame_limits",
        "_limits",
        "_message_started",
        "_rate_checked",
        "pacer",
        "principal",
        "subscriptions",
        "versions",
    )

    def __init__(self, principal: Principal, limits: SessionLimits, now: float) -> None:
        self.principal = principal
        self._limits = limits
        rate, burst = limits.rate_of(principal)
        self._bucket = TokenBucket(rate, burst, now)
        self._rate_checked = now
        service = principal.device is DeviceKind.SERVICE
        max_age = SERVICE_MAX_AGE_MS if service else limits.max_frame_age_ms
        self._frame_limits = FrameLimits(max_age_ms=max_age)
        self._errors = 0
        self._fragments = 0
        self._message_started = 0.0
        self.subscriptions: set[str] = set()
        """Users whose deltas this connection gets."""
        self.versions: dict[str, int] = {}
        """The newest version of each user this connection has been sent."""
        self.pacer = Pacer()
        """This device's delivery policy (battery saver or not), see :mod:`server.push.policy`."""

    @property
    def wants_summaries(self) -> bool:
        """Whether frame summaries are pushed too (debug pages and services)."""
        return self.principal.device in (DeviceKind.DEBUG, DeviceKind.SERVICE)

    # -- frames ------------------------------------------------------------------------

    def on_frame(self, *, data: bool, first: bool, fin: bool, now: float) -> Close | None:
        """Count one frame the client sent; a :class:`Close` if it breaks a limit.

        Every frame counts toward the rate limit, control and continuation frames too
        (``data``: a text, binary or continuation frame; ``first``: a text or binary one,
        which starts a message). Fragments are limited in number and in time per message.
        """
        if now - self._rate_checked >= RATE_CHECK_S:
            self.check_rate(now)
        if not self._bucket.take(now):
            error = wire.encode_error("rate_limited", "too many frames")
            return Close(Disconnects.RATE_LIMIT, error)
        if not data:
            return None
        if first:
            self._fragments = 1
            self._message_started = now
        else:
            self._fragments += 1
            if self._fragments > MAX_FRAGMENTS or now - self._message_started > MAX_MESSAGE_S:
                return Close(Disconnects.FRAGMENTED)
        if fin:
            self._fragments = 0
        return None

    def rate_tier(self) -> Tier | None:
        """The tier whose WebSocket rate this connection is held to (``None``: a service
        token, or a node without tiers): the ``tier`` label of a ``ws_rate`` limit."""
        tiers = self._limits.tiers
        if tiers is None or self.principal.device is DeviceKind.SERVICE:
            return None
        return tiers.of(self.principal.user_id)

    def check_rate(self, now: float) -> None:
        """Limit at the rate of the user's tier as the node knows it now (it learns the
        tier when the user's state is read: at ``hello``, or when the tier is set)."""
        self._rate_checked = now
        rate, burst = self._limits.rate_of(self.principal)
        if (rate, burst) != (self._bucket.rate, self._bucket.burst):
            self._bucket.retune(rate, burst)

    def message_deadline(self) -> float | None:
        """When the message being received in fragments must be complete (``None``: none is)."""
        return self._message_started + MAX_MESSAGE_S if self._fragments else None

    # -- messages ----------------------------------------------------------------------

    def on_message(self, data: bytes, *, text: bool, now: float) -> Action:
        """What to do about one complete message (``text``: a text message, not binary)."""
        if text:
            try:
                data.decode()
            except UnicodeDecodeError:
                return Close(Disconnects.BAD_UTF8)
        try:
            message = wire.parse_client_message(
                data, now_ms=int(now * 1000), limits=self._frame_limits
            )
        except ProtocolError as exc:
            return self._protocol_error(exc)
        if isinstance(message, FrameBatch):
            return Store(message)
        if isinstance(message, wire.Hello):
            if message.policy is not None:
                self.pacer.policy = message.policy
            self.pacer.woke(now)  # the device is awake: it asks
            return self._join(self.principal.user_id, message.since)
        if isinstance(message, wire.SetPolicy):
            self.pacer.policy = message.policy
            return Reply(message.policy.encode())
        if isinstance(message, wire.Seen):
            if self.seen_kind(message) is None:
                error = wire.encode_error("bad_message", "'kind' is required on this connection")
                return Reply(error)
            return RecordSeen(message)
        if isinstance(message, wire.CommandResult):
            return SettleCommand(message)
        if isinstance(message, wire.Subscribe):
            user_id = message.user_id or self.principal.user_id
            if not self.principal.may_access(user_id):
                error = wire.encode_error("forbidden", f"may not subscribe to {user_id}")
                return Close(Disconnects.FORBIDDEN, error)
            return self._join(user_id, None)
        return Reply(wire.encode_pong(message.t, now * 1000))

    def _protocol_error(self, exc: ProtocolError) -> Action:
        self._errors += 1
        error = wire.encode_error(exc.code, exc.message)
        if exc.code == "too_big":
            return Close(Disconnects.TOO_BIG, error)
        if self._errors > MAX_ERRORS:
            return Close(Disconnects.PROTOCOL_ERRORS, error)
        return Reply(error)

    def _join(self, user_id: str, since: int | None) -> Action:
        if user_id not in self.subscriptions and len(self.subscriptions) >= MAX_SUBSCRIPTIONS:
            return Close(Disconnects.TOO_MANY_SUBSCRIPTIONS)
        self.subscriptions.add(user_id)
        return Join(user_id, since)

    # -- outcomes of the connection's work ---------------------------------------------

    def stored(self, batch: FrameBatch) -> str:
        """The ``ack`` of a batch that is durable."""
        return wire.encode_ack(batch.seq, len(batch.frames), batch.rejected)

    def not_stored(self, batch: FrameBatch) -> str:
        """The answer to a batch the store could not take: not acked, so the client resends."""
        return wire.encode_error("unavailable", f"batch {batch.seq} not stored; resend")

    def snapshot(self, user_id: str, fields: Mapping[str, Any], since: int | None) -> str:
        """The answer to a join: ``uptodate`` if the client has ``since`` = the current
        version, else a ``snapshot`` of ``fields`` (:data:`server.protocol.SNAPSHOT_FIELDS`)."""
        version: int = fields["version"]
        self.versions[user_id] = max(self.versions.get(user_id, -1), version)
        if user_id == self.principal.user_id:
            self.check_rate(self._rate_checked)  # the state read taught the node the tier
        if since is not None and since == version:
            return wire.encode_uptodate(version, fields["state_hash"])
        return wire.encode_snapshot(fields)

    def unavailable(self, user_id: str) -> str:
        """The answer to a join whose state cannot be read now (store outage): the client
        keeps the socket and sends ``hello`` again later."""
        return wire.encode_error("unavailable", "state not available now; send hello again")

    def seen_kind(self, seen: wire.Seen) -> str | None:
        """The kind of device a ``seen`` is about: the one it names, else the connection's
        own if that is a phone or watch (``None``: a debug page or service must name one)."""
        if seen.kind is not None:
            return seen.kind
        own = self.principal.device.value
        return own if own in wire.SEEN_KINDS else None

    def command_ack(self, command_id: str, outcome: str) -> str:
        """The answer to a ``command_result``: the outcome the server holds."""
        return wire.encode_command_ack(command_id, outcome)

    def unknown_command(self, command_id: str) -> str:
        """The answer to a ``command_result`` for an id the user has no command of."""
        return wire.encode_error("bad_message", f"no command {command_id}")

    def wants(self, delta: Delta) -> bool:
        """Whether to send ``delta`` (not if the client has that version already, from a
        snapshot); records it as sent."""
        if delta.version <= self.versions.get(delta.user_id, -1):
            return False
        self.versions[delta.user_id] = delta.version
        return True
