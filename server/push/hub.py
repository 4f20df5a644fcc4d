"""The hub: this node's subscribers per user, fed by the broker.

Peers (WebSocket connections) join a user's channel; REST long-polls watch it for a while.
The hub subscribes the broker to a user while anybody local is interested, decodes each
broker message once, and offers the same text to every local peer of that user. It never
awaits a peer: offering only queues into the peer's outbox, so one slow peer cannot hold up
the broker, ingest or any other peer; a peer whose ``offer`` raises is dropped, alone.

It also repairs what the broker lost, by version (the state is small: the current version
stands for everything before it). A delta the broker did not take is re-published as the
user's current state once it can be; after the broker reconnects, every user with local
interest gets the current state as a delta to its local peers and watches. The current state
comes from :meth:`Hub.read_current_with` (the state service sits above the hub).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
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

log = logging.getLogger(__name__)

ReadCurrent = Callable[[str], Awaitable[Delta | None]]
"""The user's current state as a delta from the version before it, with every visible field
(``None`` when nothing was committed yet)."""

REPAIR = Backoff(attempts=None, base=0.2, cap=10.0)
"""How the hub retries a repair the store or the broker could not do yet."""

REPAIR_READ_TIMEOUT_S = 5.0
"""Deadline of one current-state read during a repair."""

_REPAIR_BATCH = 32
"""Users repaired at once (bounded: a reconnect may concern thousands)."""


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
        self._repair_policy = repair
        self._peers: dict[str, set[Peer]] = {}
        self._watches: dict[str, set[Watch]] = {}
        self._interest: dict[str, int] = {}
        self._read_current: ReadCurrent | None = None
        # User -> mark (a number that grows with each marking, so that a repair in flight
        # does not clear a newer mark): committed but not published, and local devices that
        # may have missed deltas during a broker outage.
        self._unpublished: dict[str, int] = {}
        self._unsynced: dict[str, int] = {}
        self._marks = itertools.count()
        self._republished = 0
        self._repair_wake = asyncio.Event()
        self._repairer: asyncio.Task[None] | None = None
        self._chores: set[asyncio.Task[None]] = set()
        metrics.track_broker(broker.health)

    async def start(self) -> None:
        await self._broker.start(self._on_message, self._on_reconnect)

    async def close(self) -> None:
        """Stop repairing and close the broker."""
        tasks = [*self._chores, *([self._repairer] if self._repairer else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._repairer = None
        await self._broker.close()

    def read_current_with(self, read: ReadCurrent) -> None:
        """Use ``read`` for the current state of a user whose devices need repairing."""
        self._read_current = read

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
            if not isinstance(exc, CompanionError):
                log.exception("publishing delta v%d of %s failed", delta.version, delta.user_id)
            elif not self._unpublished:
                log.warning(
                    "deltas not published (%s), first v%d of %s; the current states are "
                    "re-published when the broker is back",
                    exc,
                    delta.version,
                    delta.user_id,
                )
            else:
                log.debug("delta v%d of %s not published either", delta.version, delta.user_id)
            self._unpublished[delta.user_id] = next(self._marks)
            self._wake_repairs()
            return
        # A newer delta went out: devices that missed the lost one see a gap and catch up.
        self._unpublished.pop(delta.user_id, None)
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
            await self._broker.subscribe(user_id)

    async def _less_interest(self, user_id: str) -> None:
        count = self._interest.get(user_id, 0) - 1
        if count > 0:
            self._interest[user_id] = count
            return
        self._interest.pop(user_id, None)
        await self._broker.unsubscribe(user_id)

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
            # Commit -> handed to every local socket that could take it at once; a peer that
            # could not observes its own, later delivery (server.push.endpoint.Connection._drain).
            self._offer_delta(delta, payload, observe_latency=True)
        elif op == "frames":
            readers = [peer for peer in self._peers.get(user_id, ()) if peer.wants_summaries]
            if readers:
                self._offer(user_id, readers, payload.decode(), None, text_frame(payload))

    def _offer_delta(self, delta: Delta, payload: bytes, *, observe_latency: bool) -> None:
        """Tell local watches and peers about ``delta`` (``payload`` is its encoding)."""
        for watch in self._watches.get(delta.user_id, ()):
            watch.see(delta.version)
        peers = self._peers.get(delta.user_id)
        if not peers:
            return
        taken = self._offer(delta.user_id, peers, payload.decode(), delta, text_frame(payload))
        self._metrics.deltas_pushed.inc(taken)
        if observe_latency and taken:
            self._metrics.push_latency.observe(max(0.0, self._clock() - delta.t / 1000))

    def _offer(
        self, user_id: str, peers: Iterable[Peer], text: str, delta: Delta | None, frame: bytes
    ) -> int:
        """Offer to each peer; a peer that raises is dropped. How many took it."""
        taken = 0
        for peer in tuple(peers):  # a copy: dropping a peer changes the set
            try:
                peer.offer(text, delta, frame)
            except Exception as exc:
                self._drop_peer(user_id, peer, exc)
            else:
                taken += 1
        return taken

    def _drop_peer(self, user_id: str, peer: Peer, exc: Exception) -> None:
        """Forget a peer whose ``offer`` raised; the others, and the committer, go on."""
        log.warning(
            "dropping a peer of %s: taking a message raised %s", user_id, type(exc).__name__
        )
        self._metrics.peer_failures.inc()
        peers = self._peers.get(user_id)
        if peers is None or peer not in peers:
            return
        peers.discard(peer)
        if not peers:
            del self._peers[user_id]
        self._spawn(self._less_interest(user_id))

    # -- repairs ---------------------------------------------------------------------------

    def _on_reconnect(self) -> None:
        """The broker is back: every user with local interest may have missed deltas."""
        log.debug("broker reconnected: resynchronising %d users by version", len(self._interest))
        mark = next(self._marks)
        self._unsynced.update(dict.fromkeys(self._interest, mark))
        self._wake_repairs()

    def _wake_repairs(self) -> None:
        self._repair_wake.set()
        if self._repairer is None or self._repairer.done():
            self._repairer = asyncio.create_task(self._repair(), name="hub-repair")

    async def _repair(self) -> None:
        """Repair until nothing is left, backing off while the store or broker cannot."""
        retry = 0
        before = self._republished
        while self._unpublished or self._unsynced:
            self._repair_wake.clear()
            if await self._repair_round():
                retry = 0
                continue
            # Wait the backoff, or less if the broker reconnects (or a new failure) meanwhile.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._repair_policy.delay(retry)):
                    await self._repair_wake.wait()
            retry += 1
        if (count := self._republished - before) > 0:
            log.info("re-published the current state of %d users", count)

    async def _repair_round(self) -> bool:
        """One pass over what needs repairing; whether all of it was done."""
        read = self._read_current
        if read is None:
            log.warning(
                "hub has no current-state reader: %d users not repaired",
                len(self._unpublished.keys() | self._unsynced.keys()),
            )
            self._unpublished.clear()
            self._unsynced.clear()
            return True
        done = True
        for marks, repair in ((self._unpublished, self._republish), (self._unsynced, self._resync)):
            pending = list(marks.items())
            for start in range(0, len(pending), _REPAIR_BATCH):
                batch = pending[start : start + _REPAIR_BATCH]
                results = await asyncio.gather(*(repair(read, user) for user, _ in batch))
                for (user, mark), repaired in zip(batch, results, strict=True):
                    # Marked again meanwhile (a newer failure, another reconnect): keep it.
                    if repaired and marks.get(user) == mark:
                        del marks[user]
                done = done and all(results)
        return done

    async def _republish(self, read: ReadCurrent, user_id: str) -> bool:
        """Publish the user's current state to every node; whether that was done."""
        try:
            async with asyncio.timeout(REPAIR_READ_TIMEOUT_S):
                current = await read(user_id)
            if current is not None:
                await self._broker.publish(user_id, current.encode().encode())
        except (CompanionError, TimeoutError) as exc:
            log.debug("re-publishing %s failed: %s", user_id, type(exc).__name__)
            return False
        self._metrics.repairs.labels("republish").inc()
        self._republished += 1
        return True

    async def _resync(self, read: ReadCurrent, user_id: str) -> bool:
        """Offer the user's current state to this node's devices; whether that was done."""
        if user_id not in self._interest:
            return True
        try:
            async with asyncio.timeout(REPAIR_READ_TIMEOUT_S):
                current = await read(user_id)
        except (CompanionError, TimeoutError) as exc:
            log.debug("resync read of %s failed: %s", user_id, type(exc).__name__)
            return False
        if current is not None:
            # Only this node's devices: every node resyncs its own. Devices at this version
            # ignore it, one behind apply it, further behind see a gap and ask for a snapshot.
            self._offer_delta(current, current.encode().encode(), observe_latency=False)
            self._metrics.repairs.labels("resync").inc()
        return True

    def _spawn(self, work: Awaitable[None]) -> None:
        async def run() -> None:
            try:
                await work
            except CompanionError as exc:
                log.debug("hub chore failed: %s", type(exc).__name__)

        task = asyncio.create_task(run())
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)
