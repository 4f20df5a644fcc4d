"""The hub: this node's subscribers per user, fed by the broker.

Peers (WebSocket connections) join a user's channel; REST long-polls watch it for a while.
The hub subscribes the broker to a user while anybody local is interested, decodes each
broker message once, and offers the same text to every local peer of that user. It never
awaits a peer: offering only queues into the peer's outbox, so one slow peer cannot hold up
the broker, ingest or any other peer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Protocol

import orjson

from server.broker.base import Broker
from server.metrics import Metrics
from server.protocol import (
    Delta,
    FramesSummary,
    ProtocolError,
    delta_from_message,
    text_frame,
)

log = logging.getLogger(__name__)


class Peer(Protocol):
    """A local subscriber: takes messages without blocking."""

    @property
    def wants_summaries(self) -> bool:
        """Whether this peer receives ``frames`` summaries (debug and service peers)."""

    def offer(self, text: str, delta: Delta | None, frame: bytes) -> None:
        """Send or queue ``text`` without blocking.

        ``delta`` is its parsed form (``None`` for other messages) and ``frame`` the same
        text as a complete WebSocket frame, built once for all peers.
        """


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
    """Local peers and long-poll watches per user, and the broker traffic for them."""

    def __init__(
        self, broker: Broker, metrics: Metrics, clock: Callable[[], float] = time.time
    ) -> None:
        self._broker = broker
        self._metrics = metrics
        self._clock = clock
        self._peers: dict[str, set[Peer]] = {}
        self._watches: dict[str, set[Watch]] = {}
        self._interest: dict[str, int] = {}

    async def start(self) -> None:
        await self._broker.start(self._on_message)

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
        """Stop delivering to ``peer`` (no-op if it had not joined)."""
        peers = self._peers.get(user_id)
        if peers is None or peer not in peers:
            return
        peers.discard(peer)
        if not peers:
            del self._peers[user_id]
        await self._less_interest(user_id)

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
        """Send a committed delta to every node (this one included)."""
        await self._broker.publish(delta.user_id, delta.encode().encode())
        self._metrics.deltas_published.inc()

    async def publish_summary(self, summary: FramesSummary) -> None:
        """Send a frames summary to every node's debug peers of that user."""
        await self._broker.publish(summary.user_id, summary.encode().encode())

    async def _more_interest(self, user_id: str) -> None:
        count = self._interest.get(user_id, 0)
        self._interest[user_id] = count + 1
        if count == 0:
            await self._broker.subscribe(user_id)

    async def _less_interest(self, user_id: str) -> None:
        count = self._interest.get(user_id, 0) - 1
        if count > 0:
            self._interest[user_id] = count
            return
        self._interest.pop(user_id, None)
        await self._broker.unsubscribe(user_id)

    def _on_message(self, user_id: str, payload: bytes) -> None:
        try:
            message = orjson.loads(payload)
            op = message["op"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.error("dropping undecodable broker message for %s", user_id)
            return
        text = payload.decode()
        if op == "delta":
            try:
                delta = delta_from_message(message)
            except ProtocolError:
                log.error("dropping malformed delta for %s", user_id)
                return
            for watch in self._watches.get(user_id, ()):
                watch.see(delta.version)
            peers = self._peers.get(user_id)
            if not peers:
                return
            frame = text_frame(payload)
            for peer in peers:
                peer.offer(text, delta, frame)
            self._metrics.deltas_pushed.inc(len(peers))
            # Commit -> handed to every local socket that could take it at once; a peer that
            # could not observes its own, later delivery (server.push.endpoint.Connection._drain).
            self._metrics.push_latency.observe(max(0.0, self._clock() - delta.t / 1000))
        elif op == "frames":
            readers = [peer for peer in self._peers.get(user_id, ()) if peer.wants_summaries]
            if readers:
                frame = text_frame(payload)
                for peer in readers:
                    peer.offer(text, None, frame)
