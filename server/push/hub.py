"""The hub: this node's subscribers per user, fed by the broker.

Peers (WebSocket connections) join a user's channel; REST long-polls watch it for a while.
The hub subscribes the broker to a user while anybody local is interested, decodes each
broker message once, and offers the same text to every local peer of that user. It never
awaits a peer: offering only queues into the peer's outbox, so one slow peer cannot hold up
the broker, ingest or any other peer; a peer whose ``offer`` raises is dropped, alone.

What the broker loses is made good by version (:mod:`server.push.repair`): a delta the
broker did not take is re-published as the user's current state once it can be, and after
the broker reconnects every user with local interest gets the current state as a delta to
its local peers and watches. The current state comes from :meth:`Hub.read_current_with`
(the state service sits above the hub).

Every message a peer takes is counted per user in :attr:`Hub.pushed` (messages and frame
bytes, in memory); the cost meter takes the sums when it flushes (:mod:`server.cost`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

import orjson

from brain.backoff import Backoff
from server.broker.base import Broker, BrokerHealth
from server.errors import BrokerUnavailable, CompanionError
from server.metrics import Metrics
from server.protocol import (
    Delta,
    FramesSummary,
    ProtocolError,
    delta_from_message,
    text_frame,
)
from server.push.repair import REPAIR, ReadCurrent, Repairs

log = logging.getLogger(__name__)


class Peer(Protocol):
    """A local subscriber: takes messages without blocking."""

    @property
    def wants_summaries(self) -> bool:
        """Whether this peer receives ``frames`` summaries (debug and service peers)."""

    def offer(self, text: str, frame: bytes) -> None:
        """Send or queue ``text``, a message that is not a delta (a frames summary), without
        blocking; ``frame`` is the same text as a complete WebSocket frame, built once for
        all peers."""

    def offer_delta(
        self, delta: Delta, text: str, frame: bytes, follow: FollowUp | None, now: float
    ) -> None:
        """Send or queue ``delta`` (``text``, framed once as ``frame``) without blocking,
        then ``follow`` if the peer took the delta. ``now``: the hub's clock at the offer.

        Everything a delta needs once, whoever takes it (its follow-up, the time, the
        devices' book), is done by the hub before the first peer: this is called once per
        subscriber and is the whole per-delivery cost.
        """


@dataclass(frozen=True, slots=True)
class FollowUp:
    """A message that follows a delta to each peer that takes it (the commands the delta
    issued), as text and as a complete frame."""

    text: str
    frame: bytes


@dataclass(frozen=True, slots=True)
class Pushed:
    """What this node pushed to one user's local peers since it was last asked: messages
    (one per peer that took it) and their WebSocket frame bytes."""

    messages: int
    bytes: int


class PushCounts:
    """Messages and bytes pushed per user, summed in memory until :meth:`take` (the cost
    meter's flush, every few seconds): counting a push is two additions, never a store
    write. Holds only users pushed to since the last :meth:`take`, so it is bounded by the
    users with local peers."""

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: dict[str, list[int]] = {}

    def add(self, user_id: str, messages: int, frame_bytes: int) -> None:
        """Count ``messages`` pushes of a ``frame_bytes``-byte frame to ``user_id``'s peers."""
        if messages <= 0:
            return
        counts = self._counts.get(user_id)
        if counts is None:
            counts = self._counts[user_id] = [0, 0]
        counts[0] += messages
        counts[1] += messages * frame_bytes

    def take(self) -> dict[str, Pushed]:
        """What was pushed per user since the last call; starts counting afresh."""
        counts, self._counts = self._counts, {}
        return {user_id: Pushed(m, b) for user_id, (m, b) in counts.items()}

    def forget(self, user_id: str) -> None:
        """Drop what was counted for ``user_id`` (after an erase: nothing is billed to it)."""
        self._counts.pop(user_id, None)


class Watch:
    """A long-poll's view of one user: the highest version seen while it was open."""

    __slots__ = ("_event", "seen")

    def __init__(self) -> None:
        self.seen = -1
        self._event = asyncio.Event()

    def see(self, version: int) -> None:
        if version > self.seen:
            self.seen = version
            self._event.set()

    async def wait_beyond(self, version: int, seconds: float) -> bool:
        """Whether a version above ``version`` was seen, waiting up to ``seconds``."""
        try:
            async with asyncio.timeout(seconds):
                while self.seen <= version:
                    self._event.clear()
                    await self._event.wait()
        except TimeoutError:
            return False
        return True


class Hub:
    """Local peers and long-poll watches per user, the broker traffic for them, and repairs."""

    def __init__(
        self,
        broker: Broker,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
        *,
        repair: Backoff = REPAIR,
    ) -> None:
        self._broker = broker
        self._metrics = metrics
        self._clock = clock
        self._peers: dict[str, set[Peer]] = {}
        self._watches: dict[str, set[Watch]] = {}
        self._interest: dict[str, int] = {}
        self._repairs = Repairs(
            broker,
            metrics,
            lambda delta: self._offer_delta(delta, delta.encode().encode(), observe_latency=False),
            lambda user_id: user_id in self._interest,
            repair,
        )
        self._chores: set[asyncio.Task[None]] = set()
        self._unsubscribe_soon: set[str] = set()
        self._unsubscribing = False
        self.pushed = PushCounts()
        """Messages and bytes pushed per user, for the cost meter (:mod:`server.cost`)."""
        self._heard: Callable[[Delta], None] = lambda _delta: None
        self._back: Callable[[], None] = lambda: None
        self._offering: Callable[[Delta], None] = lambda _delta: None
        self._follow_up: Callable[[Delta], str | None] = lambda _delta: None
        metrics.track_broker(broker.health)

    async def start(self) -> None:
        await self._broker.start(self._on_message, self._on_reconnect)

    async def close(self) -> None:
        """Stop repairing and close the broker."""
        await self._repairs.close()
        for task in self._chores:
            task.cancel()
        await asyncio.gather(*self._chores, return_exceptions=True)
        await self._broker.close()

    def read_current_with(self, read: ReadCurrent) -> None:
        """Use ``read`` for the current state of a user whose devices need repairing."""
        self._repairs.read_current = read

    def hear_deltas(self, heard: Callable[[Delta], None], back: Callable[[], None]) -> None:
        """Call ``heard`` with every delta the broker brings (this node's own included) and
        ``back`` when the broker reconnects (deltas may have been lost meanwhile): what keeps
        the state service's kept states honest. Both must be quick and must not raise."""
        self._heard, self._back = heard, back

    def offer_with(
        self, offering: Callable[[Delta], None], follow_up: Callable[[Delta], str | None]
    ) -> None:
        """Call ``offering`` once with each delta this node's peers are offered (before the
        first), and send each peer that takes a delta ``follow_up(delta)`` right after it
        (``None``: nothing). Both must be quick and must not raise."""
        self._offering, self._follow_up = offering, follow_up

    def broker_health(self) -> BrokerHealth:
        return self._broker.health()

    def peers(self, user_id: str) -> frozenset[Peer]:
        return frozenset(self._peers.get(user_id, ()))

    @property
    def user_count(self) -> int:
        return len(self._peers)

    async def join(self, user_id: str, peer: Peer) -> None:
        """Deliver ``user_id``'s messages to ``peer`` from now on."""
        peers = self._peers.setdefault(user_id, set())
        if peer not in peers:
            peers.add(peer)
            await self._more_interest(user_id)

    async def leave(self, user_id: str, peer: Peer) -> None:
        """Stop delivering to ``peer`` (no-op if it had not joined or was dropped)."""
        if self._remove(user_id, peer):
            await self._less_interest(user_id)

    def drop(self, user_ids: Iterable[str], peer: Peer) -> None:
        """Stop delivering ``user_ids``' messages to ``peer`` now, without awaiting (a lost
        socket): the users nobody here follows any more are unsubscribed from the broker
        by one background chore, however many sockets were lost at once (a fleet cut
        loses thousands in one turn of the event loop; a task each would stall it)."""
        for user_id in user_ids:
            if self._remove(user_id, peer) and self._released(user_id):
                self._unsubscribe_soon.add(user_id)
        if self._unsubscribe_soon and not self._unsubscribing:
            self._unsubscribing = True
            self._spawn(self._unsubscribe_idle())

    async def _unsubscribe_idle(self) -> None:
        """Unsubscribe the users :meth:`drop` left unfollowed, unless followed again since."""
        try:
            while self._unsubscribe_soon:
                user_id = self._unsubscribe_soon.pop()
                if user_id not in self._interest:
                    await self._broker.unsubscribe(user_id)
        finally:
            self._unsubscribing = False

    @asynccontextmanager
    async def watch(self, user_id: str) -> AsyncIterator[Watch]:
        """Watch ``user_id``'s versions while the block runs.

        Enter before reading the current state: a change committed in between is not missed.
        """
        watch = Watch()
        self._watches.setdefault(user_id, set()).add(watch)
        await self._more_interest(user_id)
        self._metrics.longpolls.inc()
        try:
            yield watch
        finally:
            self._metrics.longpolls.dec()
            watches = self._watches.get(user_id)
            if watches is not None:
                watches.discard(watch)
                if not watches:
                    del self._watches[user_id]
            await self._less_interest(user_id)

    async def publish_delta(self, delta: Delta) -> None:
        """Send a committed delta to every node (this one included). Never raises.

        The state is committed already, so a broker that does not take the delta is no error
        for the caller: it is counted, the user's current state is re-published when the
        broker takes messages again, and one WARNING says so for each run of failures (the
        users after the first, at DEBUG: an outage must not write a line per user).
        """
        try:
            await self._broker.publish(delta.user_id, delta.encode().encode())
        except Exception as exc:
            self._metrics.publish_failures.labels("delta").inc()
            first = self._repairs.unpublished(delta.user_id)
            if not isinstance(exc, CompanionError):
                log.exception("publishing delta v%d of %s failed", delta.version, delta.user_id)
            elif first:
                log.warning(
                    "deltas not published (%s), first v%d of %s; the current states are "
                    "re-published when the broker is back",
                    exc,
                    delta.version,
                    delta.user_id,
                )
            else:
                log.debug("delta v%d of %s not published either", delta.version, delta.user_id)
            return
        self._repairs.published(delta.user_id)
        self._metrics.deltas_published.inc()

    async def publish_summary(self, summary: FramesSummary) -> None:
        """Send a frames summary to every node's debug peers of that user. Never raises for
        an unavailable broker: summaries are a live view, not worth a repair."""
        try:
            await self._broker.publish(summary.user_id, summary.encode().encode())
        except BrokerUnavailable:
            self._metrics.publish_failures.labels("summary").inc()

    # -- interest --------------------------------------------------------------------------

    async def _more_interest(self, user_id: str) -> None:
        count = self._interest.get(user_id, 0)
        self._interest[user_id] = count + 1
        if count == 0:
            self._unsubscribe_soon.discard(user_id)  # followed again: keep it subscribed
            await self._broker.subscribe(user_id)

    async def _less_interest(self, user_id: str) -> None:
        if self._released(user_id):
            await self._broker.unsubscribe(user_id)

    def _released(self, user_id: str) -> bool:
        """Count one follower of ``user_id`` less; whether nobody here follows it now."""
        count = self._interest.get(user_id, 0) - 1
        if count > 0:
            self._interest[user_id] = count
            return False
        self._interest.pop(user_id, None)
        return True

    def _remove(self, user_id: str, peer: Peer) -> bool:
        """Take ``peer`` off ``user_id``'s peers; whether it was one."""
        peers = self._peers.get(user_id)
        if peers is None or peer not in peers:
            return False
        peers.discard(peer)
        if not peers:
            del self._peers[user_id]
        return True

    # -- delivery --------------------------------------------------------------------------

    def _on_message(self, user_id: str, payload: bytes) -> None:
        try:
            message = orjson.loads(payload)
            op = message["op"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("dropping undecodable broker message for %s", user_id)
            return
        if op == "delta":
            try:
                delta = delta_from_message(message)
            except ProtocolError:
                log.warning("dropping malformed delta for %s", user_id)
                return
            self._heard(delta)
            # Commit -> handed to every local socket that could take it at once; a peer that
            # could not observes its own, later delivery (server.push.delivery.Delivery._drain).
            self._offer_delta(delta, payload, observe_latency=True)
        elif op == "frames":
            readers = [peer for peer in self._peers.get(user_id, ()) if peer.wants_summaries]
            if readers:
                self._offer(user_id, readers, payload.decode(), text_frame(payload))

    def _offer_delta(self, delta: Delta, payload: bytes, *, observe_latency: bool) -> None:
        """Tell local watches and peers about ``delta`` (``payload`` is its encoding)."""
        user_id = delta.user_id
        for watch in self._watches.get(user_id, ()):
            watch.see(delta.version)
        peers = self._peers.get(user_id)
        if not peers:
            return
        self._offering(delta)
        follow = None
        if (follow_text := self._follow_up(delta)) is not None:
            follow = FollowUp(follow_text, text_frame(follow_text.encode()))
        text, frame, now = payload.decode(), text_frame(payload), self._clock()
        taken = 0
        for peer in tuple(peers):  # a copy: dropping a peer changes the set
            try:
                peer.offer_delta(delta, text, frame, follow, now)
            except Exception as exc:
                self._drop_peer(user_id, peer, exc)
            else:
                taken += 1
        self.pushed.add(user_id, taken, len(frame))
        self._metrics.deltas_pushed.inc(taken)
        if observe_latency and taken:  # commit -> handed to the last local socket
            self._metrics.push_latency.observe(max(0.0, self._clock() - delta.t / 1000))

    def _offer(self, user_id: str, peers: Iterable[Peer], text: str, frame: bytes) -> None:
        """Offer a message that is not a delta to each peer; a peer that raises is dropped.
        Each that took it counts as a push of ``frame``'s bytes."""
        taken = 0
        for peer in tuple(peers):  # a copy: dropping a peer changes the set
            try:
                peer.offer(text, frame)
            except Exception as exc:
                self._drop_peer(user_id, peer, exc)
            else:
                taken += 1
        self.pushed.add(user_id, taken, len(frame))

    def _drop_peer(self, user_id: str, peer: Peer, exc: Exception) -> None:
        """Forget a peer whose ``offer`` raised; the others, and the committer, go on."""
        log.warning(
            "dropping a peer of %s: taking a message raised %s", user_id, type(exc).__name__
        )
        self._metrics.peer_failures.inc()
        self.drop((user_id,), peer)

    # -- repairs ---------------------------------------------------------------------------

    def _on_reconnect(self) -> None:
        """The broker is back: every user with local interest may have missed deltas."""
        log.debug("broker reconnected: resynchronising %d users by version", len(self._interest))
        self._back()
        self._repairs.reconnected(self._interest)

    def _spawn(self, work: Awaitable[None]) -> None:
        async def run() -> None:
            try:
                await work
            except CompanionError as exc:
                log.debug("hub chore failed: %s", type(exc).__name__)

        task = asyncio.create_task(run())
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)
