"""Who is in the cluster: each node heartbeats its :class:`NodeRecord`; readers list them.

Two kinds, chosen by the broker setting (one place, :func:`build_membership`):

* :class:`LocalMembership` — one node (memory broker): the cluster is this node alone.
* :class:`RedisMembership` — a ``redis://`` broker: every node writes its record to
  ``companion:node:<id>`` with a time to live of a few seconds (``SET … PX``), and keeps
  its last record and last-seen time in ``companion:nodes:last`` (a hash) and
  ``companion:nodes:seen`` (a sorted set by last-seen). A node whose key expired is *down*
  — Redis's own expiry decides, so clocks of the nodes need not agree — and is shown with
  its last record until it has been silent for :data:`FORGET_AFTER_S`. A node that stops
  cleanly leaves (its entries are deleted).

Every Redis call has a deadline. A Redis that is down or restarting is a normal event: the
call raises :class:`MembershipUnavailable`, the heartbeat loop backs off and tries again,
and the connection pool reconnects by itself once Redis answers.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from server.ops.node import NodeRecord

NODE_KEY = "companion:node:"
LAST_KEY = "companion:nodes:last"
SEEN_KEY = "companion:nodes:seen"
TTL_S = 5.0
"""How long a heartbeat keeps a node up: five beats of one second, so a node survives a
slow beat or two but a dead one shows as down within seconds."""
FORGET_AFTER_S = 600.0
"""How long a node that went down stays on the page (with its last record)."""
CALL_TIMEOUT_S = 2.0


class MembershipUnavailable(Exception):
    """The membership store (Redis) did not answer in time or failed."""


@dataclass(frozen=True, slots=True)
class Member:
    """A node as the cluster knows it: its newest record, and whether its heartbeat lives."""

    record: NodeRecord
    up: bool


class Membership(Protocol):
    """Where nodes announce themselves and find each other."""

    async def beat(self, record: NodeRecord) -> None:
        """Announce ``record``. Raises :class:`MembershipUnavailable`."""

    async def members(self) -> list[Member]:
        """Every node up, and those down less than a while. Raises MembershipUnavailable."""

    async def leave(self, node_id: str) -> None:
        """Withdraw ``node_id`` (a clean stop). Raises :class:`MembershipUnavailable`."""

    async def close(self) -> None:
        """Release connections. Idempotent."""


class LocalMembership:
    """The membership of a single node: itself."""

    def __init__(self) -> None:
        self._record: NodeRecord | None = None

    async def beat(self, record: NodeRecord) -> None:
        self._record = record

    async def members(self) -> list[Member]:
        return [] if self._record is None else [Member(self._record, up=True)]

    async def leave(self, node_id: str) -> None:
        self._record = None

    async def close(self) -> None:
        pass


class RedisMembership:
    """Heartbeats and listings on Redis (see the module docstring for the keys)."""

    def __init__(
        self,
        url: str,
        *,
        ttl_s: float = TTL_S,
        forget_after_s: float = FORGET_AFTER_S,
        timeout_s: float = CALL_TIMEOUT_S,
    ) -> None:
        self._client: aioredis.Redis = aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._ttl_ms = int(ttl_s * 1000)
        self._forget_ms = int(forget_after_s * 1000)
        self._timeout = timeout_s

    async def beat(self, record: NodeRecord) -> None:
        data = record.to_json()
        seen_ms = int(record.seen_at * 1000)
        try:
            async with asyncio.timeout(self._timeout):
                async with self._client.pipeline(transaction=True) as pipe:
                    pipe.set(NODE_KEY + record.node_id, data, px=self._ttl_ms)
                    pipe.hset(LAST_KEY, record.node_id, data)
                    pipe.zadd(SEEN_KEY, {record.node_id: seen_ms})
                    pipe.zrangebyscore(SEEN_KEY, "-inf", seen_ms - self._forget_ms)
                    results = await pipe.execute()
                forgotten = [_text(node) for node in results[-1]]
                if forgotten:
                    async with self._client.pipeline(transaction=True) as pipe:
                        pipe.hdel(LAST_KEY, *forgotten)
                        pipe.zrem(SEEN_KEY, *forgotten)
                        await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            raise MembershipUnavailable(f"heartbeat failed: {exc!r}") from None

    async def members(self) -> list[Member]:
        try:
            async with asyncio.timeout(self._timeout):
                async with self._client.pipeline(transaction=False) as pipe:
                    pipe.zrange(SEEN_KEY, 0, -1)
                    pipe.hgetall(LAST_KEY)
                    ids_raw, last_raw = await pipe.execute()
                ids = [_text(node) for node in ids_raw]
                alive = await self._client.mget([NODE_KEY + i for i in ids]) if ids else []
        except (RedisError, OSError, TimeoutError) as exc:
            raise MembershipUnavailable(f"listing failed: {exc!r}") from None
        last = {_text(k): v for k, v in last_raw.items()}
        members: list[Member] = []
        for node_id, current in zip(ids, alive, strict=True):
            raw = current if current is not None else last.get(node_id)
            if raw is None:
                continue
            try:
                record = NodeRecord.from_json(raw)
            except ValueError:
                continue  # a record of another version of the server, or damaged: skip it
            members.append(Member(record, up=current is not None))
        return members

    async def leave(self, node_id: str) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                async with self._client.pipeline(transaction=True) as pipe:
                    pipe.delete(NODE_KEY + node_id)
                    pipe.hdel(LAST_KEY, node_id)
                    pipe.zrem(SEEN_KEY, node_id)
                    await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            raise MembershipUnavailable(f"leave failed: {exc!r}") from None

    async def close(self) -> None:
        await self._client.aclose()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def build_membership(broker: str) -> Membership:
    """The membership that goes with the broker setting (``memory`` or a ``redis://`` URL)."""
    if broker.startswith(("redis://", "rediss://", "unix://")):
        return RedisMembership(broker)
    return LocalMembership()
