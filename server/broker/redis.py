"""The Redis broker: pub/sub between nodes, one channel per user, healing by itself.

Each node holds one subscriber connection, subscribed to the channels of the users it has
local interest in, and a reader task that hands each message to the hub in arrival order.
Commands (``PUBLISH``) go over a second client with its own pool.

Redis pub/sub is at-most-once: a node that loses its connection misses what was published
meanwhile. So the reader heals, and says so:

- any failure of the subscriber connection (reset, refused, a read error, or silence: no
  answer to a heartbeat ``PING`` for three heartbeats, as with a hung or failed-over Redis)
  ends that connection; the reader logs one WARNING for the outage, then connects a fresh
  one with :class:`brain.backoff.Backoff` (forever, full jitter), subscribing every channel
  wanted at that moment — including those subscribed during the outage;
- once connected again it logs one INFO and, as soon as Redis confirms the subscriptions
  (the answer to a ``PING`` sent after them), calls ``on_reconnect``: the hub resynchronises
  its devices by version (``docs/protocol.md``).

``publish`` fails fast with :class:`~server.errors.BrokerUnavailable` while the subscriber
connection is down (the caller's state is committed already; the hub re-publishes it when
the broker is back), and within ``command_timeout_s`` when Redis does not answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from brain.backoff import Backoff
from server.broker.base import BrokerHealth, Handler, OnReconnect, deliver
from server.errors import BrokerUnavailable

log = logging.getLogger(__name__)

PREFIX = "companion:user:"

RECONNECT = Backoff(attempts=None, base=0.05, cap=5.0)
"""How the reader retries a lost connection: forever, up to 5 s apart, full jitter."""

_SILENCE_HEARTBEATS = 3
"""Heartbeats without a word from Redis before the subscriber connection counts as lost."""

# What a broken or hung connection raises: redis-py's errors, the socket's, our deadlines,
# redis-py's RuntimeError for a pub/sub whose connection was dropped under it, and ours for
# a connection on which a subscription could not be sent.
_LOST = (RedisError, OSError, TimeoutError, RuntimeError, BrokerUnavailable)


class RedisBroker:
    """Publishes to ``companion:user:<id>`` and delivers subscribed channels to a handler."""

    def __init__(
        self,
        url: str,
        *,
        backoff: Backoff = RECONNECT,
        heartbeat_s: float = 1.0,
        command_timeout_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        timeouts: dict[str, Any] = {
            "socket_timeout": command_timeout_s,
            "socket_connect_timeout": command_timeout_s,
        }
        # One retry on a fresh connection: after a Redis restart every pooled connection is
        # dead, and the first command on one must not fail for that alone.
        self._client: aioredis.Redis = aioredis.Redis.from_url(
            url, retry=Retry(NoBackoff(), 1), **timeouts
        )
        # No hidden retries on the subscriber: each failure must reach the reader, which
        # reconnects, resubscribes and tells the hub.
        self._subscriber: aioredis.Redis = aioredis.Redis.from_url(
            url, retry=Retry(NoBackoff(), 0), **timeouts
        )
        self._backoff = backoff
        self._heartbeat = heartbeat_s
        self._timeout = command_timeout_s
        self._clock = clock
        self._channels: set[str] = set()
        self._handler: Handler | None = None
        self._on_reconnect: OnReconnect | None = None
        self._pubsub: PubSub | None = None  # set only while connected
        self._broken = False  # a (un)subscribe failed on the current connection
        self._announce = False  # reconnected: tell on_reconnect once subscriptions hold
        self._reader: asyncio.Task[None] | None = None
        self._closing = False
        self._last_heard: float | None = None
        self._last_ping = 0.0
        self._down_since: float | None = None
        self._reconnects = 0
        self._handler_errors = 0

    async def start(self, handler: Handler, on_reconnect: OnReconnect | None = None) -> None:
        """Connect, and keep connected; an unreachable Redis is retried in the background."""
        self._handler = handler
        self._on_reconnect = on_reconnect
        try:
            await self._connect()
        except _LOST as exc:
            self._lost(exc)
        self._reader = asyncio.create_task(self._run(), name="redis-broker-reader")

    async def publish(self, user_id: str, payload: bytes) -> None:
        if self._pubsub is None:
            raise BrokerUnavailable("redis broker is not connected")
        try:
            async with asyncio.timeout(self._timeout):
                await self._client.publish(PREFIX + user_id, payload)
        except (RedisError, OSError, TimeoutError) as exc:
            raise BrokerUnavailable(f"redis publish failed: {type(exc).__name__}") from None

    async def subscribe(self, user_id: str) -> None:
        channel = PREFIX + user_id
        if channel in self._channels:
            return
        self._channels.add(channel)
        pubsub = self._pubsub
        if pubsub is not None:  # otherwise the reader subscribes it when it connects
            await self._send(pubsub, pubsub.subscribe, channel)

    async def unsubscribe(self, user_id: str) -> None:
        channel = PREFIX + user_id
        if channel not in self._channels:
            return
        self._channels.discard(channel)
        pubsub = self._pubsub
        if pubsub is not None:
            await self._send(pubsub, pubsub.unsubscribe, channel)

    def health(self) -> BrokerHealth:
        heard = self._last_heard
        return BrokerHealth(
            connected=self._pubsub is not None,
            reconnects=self._reconnects,
            handler_errors=self._handler_errors,
            last_heard_age_s=None if heard is None else max(0.0, self._clock() - heard),
        )

    async def close(self) -> None:
        self._closing = True
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        await self._drop()
        await self._client.aclose()
        await self._subscriber.aclose()
        self._handler = None

    # -- the reader ------------------------------------------------------------------------

    async def _run(self) -> None:
        retry = 0
        # The flag as well as the cancel: a read whose own deadline expires at the moment of
        # the cancel can turn the cancel into a timeout (redis-py returns None for it).
        while not self._closing:
            pubsub = self._pubsub
            if pubsub is None:
                try:
                    await self._connect()
                except _LOST as exc:
                    self._lost(exc)
                    await self._backoff.wait(retry)
                    retry += 1
                continue
            since = self._clock()
            try:
                await self._listen(pubsub)
            except _LOST as exc:
                self._lost(exc)
                await self._drop()
                if self._clock() - since >= self._backoff.cap:
                    retry = 0  # it held a while: a new outage, worth an immediate retry
                else:
                    # A connection that fails as soon as it is made must not spin the loop.
                    await self._backoff.wait(retry)
                    retry += 1

    async def _connect(self) -> None:
        """A fresh subscriber connection with every wanted channel (raises one of ``_LOST``)."""
        pubsub = self._subscriber.pubsub()
        try:
            async with asyncio.timeout(self._timeout):
                await pubsub.connect()  # type: ignore[no-untyped-call]
                wanted = set(self._channels)
                if wanted:
                    await pubsub.subscribe(*wanted)
                # Channels (un)subscribed while we were connecting: the caller saw no
                # connection and left them to us.
                while wanted != self._channels:
                    added, gone = self._channels - wanted, wanted - self._channels
                    wanted = set(self._channels)
                    if added:
                        await pubsub.subscribe(*added)
                    if gone:
                        await pubsub.unsubscribe(*gone)
                if self._down_since is not None:
                    # Redis answers in order: once this PING's answer arrives, every
                    # SUBSCRIBE above is in force, and only then may the hub read the
                    # current states (a commit between the two would otherwise be missed).
                    await pubsub.ping()
        except BaseException:
            await _close_quietly(pubsub)
            raise
        self._pubsub, self._broken = pubsub, False
        self._last_heard = self._last_ping = self._clock()
        if self._down_since is not None:
            outage = self._clock() - self._down_since
            self._down_since = None
            self._reconnects += 1
            log.info(
                "redis broker connected again after %.1f s; %d channels subscribed",
                outage,
                len(self._channels),
            )
            self._announce = True

    async def _listen(self, pubsub: PubSub) -> None:
        """Deliver messages until the connection fails (raises one of ``_LOST``) or the
        broker closes."""
        while not self._closing:
            if self._broken:
                raise BrokerUnavailable("a subscription could not be sent")
            message = await pubsub.get_message(timeout=self._heartbeat)
            now = self._clock()
            if message is not None:
                self._last_heard = now  # any answer counts: messages, confirmations, pongs
                kind = message.get("type")
                if kind == "message":
                    self._deliver(message)
                elif kind == "pong" and self._announce:
                    self._announce = False
                    if self._on_reconnect is not None:
                        self._on_reconnect()
                continue
            silent = now - (self._last_heard or now)
            if silent >= _SILENCE_HEARTBEATS * self._heartbeat:
                raise TimeoutError(f"no answer from redis for {silent:.1f} s")
            if now - self._last_ping >= self._heartbeat:
                self._last_ping = now
                async with asyncio.timeout(self._timeout):
                    await pubsub.ping()

    def _deliver(self, message: dict[str, Any]) -> None:
        channel = message["channel"]
        channel = channel.decode() if isinstance(channel, bytes) else str(channel)
        if self._handler is None or not channel.startswith(PREFIX):
            return
        if not deliver(self._handler, channel[len(PREFIX) :], message["data"]):
            self._handler_errors += 1

    def _lost(self, exc: BaseException) -> None:
        """Note an outage: one WARNING when it starts, nothing for the retries after it."""
        if self._down_since is None:
            self._down_since = self._clock()
            log.warning(
                "redis broker connection lost (%s); reconnecting with backoff",
                type(exc).__name__,
            )

    async def _drop(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            await _close_quietly(pubsub)

    async def _send(self, pubsub: PubSub, command: Callable[..., Any], channel: str) -> None:
        """(Un)subscribe on the live connection; on failure leave it to the reader to heal."""
        try:
            async with asyncio.timeout(self._timeout):
                await command(channel)
        except (RedisError, OSError, TimeoutError, RuntimeError):
            if pubsub is self._pubsub:
                # The reader reconnects and subscribes every wanted channel afresh.
                self._broken = True


async def _close_quietly(pubsub: PubSub) -> None:
    """Close a pub/sub whose connection may be broken already."""
    with contextlib.suppress(*_LOST):
        async with asyncio.timeout(1.0):
            await pubsub.aclose()  # type: ignore[no-untyped-call]
