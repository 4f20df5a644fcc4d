"""The Redis broker: pub/sub between nodes, one channel per user.

Each node holds one pub/sub connection, subscribed to the channels of the users it has
local interest in, and a reader task that hands each message to the hub in arrival order.
Redis pub/sub is at-most-once: a node that loses its connection misses what was published
meanwhile, so after a reconnect the reader tells the hub (``on_reconnect``) and devices
recover the way they always do, by version: the next delta shows a gap and they ask for a
snapshot. The reconnect itself retries with capped exponential backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from server.broker.base import Handler

log = logging.getLogger(__name__)

PREFIX = "companion:user:"


class RedisBroker:
    """Publishes to ``companion:user:<id>`` and delivers subscribed channels to a handler."""

    def __init__(
        self,
        url: str,
        *,
        on_reconnect: Callable[[], None] | None = None,
        max_backoff: float = 5.0,
    ) -> None:
        self._url = url
        self._client: aioredis.Redis = aioredis.Redis.from_url(url)
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        self._channels: set[str] = set()
        self._handler: Handler | None = None
        self._reader: asyncio.Task[None] | None = None
        self._on_reconnect = on_reconnect
        self._max_backoff = max_backoff
        self._ready = asyncio.Event()

    async def start(self, handler: Handler) -> None:
        """Connect (raises :class:`redis.exceptions.RedisError` if Redis is unreachable)."""
        self._handler = handler
        await self._client.ping()
        self._reader = asyncio.create_task(self._read(), name="redis-broker-reader")

    async def publish(self, user_id: str, payload: bytes) -> None:
        await self._client.publish(PREFIX + user_id, payload)

    async def subscribe(self, user_id: str) -> None:
        channel = PREFIX + user_id
        if channel not in self._channels:
            self._channels.add(channel)
            await self._pubsub.subscribe(channel)
            self._ready.set()

    async def unsubscribe(self, user_id: str) -> None:
        channel = PREFIX + user_id
        if channel in self._channels:
            self._channels.discard(channel)
            await self._pubsub.unsubscribe(channel)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        await self._client.aclose()
        self._handler = None

    async def _read(self) -> None:
        backoff = 0.05
        while True:
            if not self._channels:
                # get_message() needs at least one subscription to read from.
                self._ready.clear()
                await self._ready.wait()
            try:
                message = await self._pubsub.get_message(timeout=1.0)
            except (RedisConnectionError, OSError) as exc:
                log.warning("redis broker connection lost (%r); reconnecting", exc)
                await asyncio.sleep(random.uniform(0, backoff))  # backoff with full jitter
                backoff = min(self._max_backoff, backoff * 2)
                await self._resubscribe()
                continue
            except RedisError:
                log.exception("redis broker read failed")
                continue
            backoff = 0.05
            if message is None or message.get("type") != "message":
                continue
            channel = message["channel"]
            channel = channel.decode() if isinstance(channel, bytes) else str(channel)
            if self._handler is not None and channel.startswith(PREFIX):
                try:
                    self._handler(channel[len(PREFIX) :], message["data"])
                except Exception:
                    log.exception("broker handler failed")

    async def _resubscribe(self) -> None:
        try:
            await self._pubsub.reset()
            self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            if self._channels:
                await self._pubsub.subscribe(*self._channels)
        except (RedisConnectionError, OSError) as exc:
            log.warning("redis resubscribe failed: %r", exc)
            return
        if self._on_reconnect is not None:
            self._on_reconnect()
