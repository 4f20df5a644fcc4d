"""One owner per user in the cluster: Redis leases with fencing tokens, and notices to owners.

With a Redis broker, every node runs a :class:`RedisOwners` on the same Redis. A user's
analysis belongs to the node that holds the user's **lease**, the key
``companion:owner:<user>`` whose value is ``<node>:<fence>``:

- ``SET … NX PX <lease>`` takes a free lease (in one Lua script with an ``INCR`` of
  ``companion:fence:<user>``, the **fencing token**: it grows with every new owner, so an
  owner that lost its lease and got it back later is told apart from itself);
- the owner renews its leases every third of the lease time while it has work for the user
  (frames arrived within the last lease time) and gives them back (``DEL`` only if the value
  is still its own) when the user went quiet;
- a node that receives frames of a user owned elsewhere sends the owner a **notice**
  (``PUBLISH companion:analysis:<node>``, ``user`` and the oldest new frame's time): the
  frames are in the shared store already, the owner reads them from there. A non-owner never
  analyses;
- an erase is announced to every node (``PUBLISH companion:analysis:erase``), which drop
  their windows and queued work for the user (the store's erase epoch is what makes the
  erase final; the notice only keeps caches honest).

Redis pub/sub is at most once. What covers a lost message: after its subscription comes
back, a node re-reads every user it owns from the store (a full refresh); a notice that
reached nobody (``PUBLISH`` answered 0: the owner is dead or cut off) is remembered, and
once the owner's lease is gone the sender takes the lease and analyses the user itself;
otherwise the user's next frames send the next notice. docs/operations.md describes the
failure modes (owner dies, Redis restarts, network split, clock skew).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from brain.backoff import Backoff

log = logging.getLogger(__name__)

OWNER = "companion:owner:"
FENCE = "companion:fence:"
NOTICES = "companion:analysis:"
ERASE_CHANNEL = NOTICES + "erase"

RENEW_BATCH = 500
"""Lease renewals sent to Redis in one pipeline."""

MAX_FORWARDED = 100_000
"""Users whose notice reached no owner that a node remembers at once (the oldest go first)."""

_CLAIM = """
local held = redis.call('GET', KEYS[1])
if not held then
  local fence = redis.call('INCR', KEYS[2])
  local value = ARGV[1] .. ':' .. fence
  redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
  return value
end
if string.sub(held, 1, string.len(ARGV[1]) + 1) == ARGV[1] .. ':' then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return held
"""
"""Take the free lease of a user (with a new fence) or renew our own; return the holder."""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
"""Renew a lease only while it holds exactly our value (our node and fence)."""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

Notice = Callable[[str, int | None], None]
"""Called with (user_id, since_ms) for a user this node owns that has new frames from
``since_ms`` on (``None``: re-read the whole window)."""


@dataclass(frozen=True, slots=True)
class Lease:
    """A lease this node holds: the value in Redis (``node:fence``) and its fencing token."""

    value: str
    fence: int


def new_node_id() -> str:
    """A node id unique in the cluster (a process's lifetime; a restarted node is new)."""
    return uuid.uuid4().hex[:16]


class RedisOwners:
    """See the module docstring. :meth:`start` in a running loop, :meth:`close` at the end.

    ``on_notice`` hears the users this node owns and must analyse; ``on_release`` the users
    it stopped owning (drop their windows); ``on_erase`` every erase in the cluster.
    Raises :class:`ValueError` for a lease under 300 ms.
    """

    def __init__(
        self,
        url: str,
        *,
        lease_ms: int,
        node_id: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        backoff: Backoff | None = None,
    ) -> None:
        if lease_ms < 300:
            raise ValueError(f"lease_ms must be at least 300, got {lease_ms}")
        self.node_id = node_id or new_node_id()
        self.lease_ms = lease_ms
        self._client: aioredis.Redis = aioredis.Redis.from_url(
            url, socket_timeout=lease_ms / 1000, socket_connect_timeout=lease_ms / 1000
        )
        self._claim = self._client.register_script(_CLAIM)
        self._renew = self._client.register_script(_RENEW)
        self._release = self._client.register_script(_RELEASE)
        self._clock = clock
        self._backoff = backoff or Backoff(attempts=None, base=0.05, cap=2.0)
        self._held: dict[str, tuple[Lease, float]] = {}
        """Users whose lease we hold: the lease and when their last frames arrived."""
        self._forwarded: OrderedDict[str, float] = OrderedDict()
        """Users whose last notice reached no owner, and when it was sent."""
        self._tasks: list[asyncio.Task[None]] = []
        self._rerouting: set[asyncio.Task[None]] = set()
        self._subscribed = asyncio.Event()
        self.on_notice: Notice = lambda _user, _since: None
        self.on_release: Callable[[str], None] = lambda _user: None
        self.on_erase: Callable[[str], None] = lambda _user: None

    @property
    def channel(self) -> str:
        """The pub/sub channel this node hears notices on."""
        return NOTICES + self.node_id

    def held(self) -> list[str]:
        """The users whose lease this node holds."""
        return list(self._held)

    async def start(self) -> None:
        """Subscribe and start renewing. Raises :class:`RedisError` if Redis is unreachable."""
        await self._client.ping()
        self._tasks = [
            asyncio.create_task(self._listen(), name="owners-listen"),
            asyncio.create_task(self._keep(), name="owners-renew"),
        ]
        async with asyncio.timeout(self.lease_ms / 1000 * 3):
            await self._subscribed.wait()

    async def close(self) -> None:
        """Stop, and give back every lease held (another node may take them at once)."""
        for task in [*self._tasks, *self._rerouting]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._rerouting, return_exceptions=True)
        self._tasks = []
        with contextlib.suppress(RedisError, OSError):
            async with asyncio.timeout(self.lease_ms / 1000):
                for user_id, (lease, _) in list(self._held.items()):
                    await self._release(keys=[OWNER + user_id], args=[lease.value])
        self._held.clear()
        await self._client.aclose()

    async def route(self, user_id: str, since_ms: int | None) -> None:
        """New frames of ``user_id`` (from ``since_ms`` on) are durable: have the owner
        analyse them, taking the lease if it is free. Raises :class:`RedisError`."""
        holder = await self._take(user_id)
        if holder is not None:
            self.on_notice(user_id, since_ms)
            return
        owner = await self._client.get(OWNER + user_id)
        if owner is None:  # released between the two calls: try once more
            if await self._take(user_id) is not None:
                self.on_notice(user_id, since_ms)
                return
        else:
            text = owner.decode() if isinstance(owner, bytes) else str(owner)
            node = text.rpartition(":")[0]
            payload = f"{user_id}\n{'' if since_ms is None else since_ms}"
            if await self._client.publish(NOTICES + node, payload):
                return
        self._forwarded[user_id] = self._clock()
        self._forwarded.move_to_end(user_id)
        while len(self._forwarded) > MAX_FORWARDED:
            self._forwarded.popitem(last=False)

    async def lease_of(self, user_id: str) -> Lease | None:
        """Our lease of ``user_id`` if Redis says we still hold it (renewing it), else
        ``None``. Raises :class:`RedisError`."""
        entry = self._held.get(user_id)
        if entry is None:
            return None
        lease, _ = entry
        renewed = await self._renew(keys=[OWNER + user_id], args=[lease.value, self.lease_ms])
        if not renewed:
            self._lost(user_id)
            return None
        return lease

    async def announce_erase(self, user_id: str) -> None:
        """Tell every node that ``user_id`` was erased. Raises :class:`RedisError`."""
        await self._client.publish(ERASE_CHANNEL, user_id)

    # -- inside ----------------------------------------------------------------------

    async def _take(self, user_id: str) -> Lease | None:
        """Our lease of ``user_id``, taken now if it was free; ``None`` if another node's."""
        value = await self._claim(
            keys=[OWNER + user_id, FENCE + user_id],
            args=[
                self.node_id,
                self.lease_ms,
            ],
        )
        text = value.decode() if isinstance(value, bytes) else str(value)
        node, _, fence = text.rpartition(":")
        if node != self.node_id:
            return None
        lease = Lease(text, int(fence))
        self._held[user_id] = (lease, self._clock())
        self._forwarded.pop(user_id, None)
        return lease

    def _lost(self, user_id: str) -> None:
        if self._held.pop(user_id, None) is not None:
            self.on_release(user_id)

    async def _listen(self) -> None:
        """Hear notices and erases; after a lost connection, resubscribe (backing off
        forever) and re-read every user we own, since notices may have been missed."""
        retry = 0
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel, ERASE_CHANNEL)
                if retry:
                    log.info("analysis notices: subscribed again after %d tries", retry)
                    for user_id in list(self._held):
                        self.on_notice(user_id, None)
                retry = 0
                self._subscribed.set()
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self._hear(message)
            except (RedisError, OSError) as exc:
                log.warning("analysis notices: Redis connection lost (%s); retrying", type(exc))
            except Exception:
                # Never let the listener die silently (a dead listener is a deaf node).
                log.exception("analysis notices: listener failed; retrying")
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await self._backoff.wait(retry)
            retry += 1

    def _hear(self, message: dict[str, object]) -> None:
        channel, data = message.get("channel"), message.get("data")
        if not isinstance(channel, bytes) or not isinstance(data, bytes):
            return
        text = data.decode(errors="replace")
        if channel.decode() == ERASE_CHANNEL:
            self.on_erase(text)  # the lease stays: new frames after the erase come here
            return
        user_id, _, since = text.partition("\n")
        since_ms = int(since) if since.isdigit() else None
        if user_id in self._held:
            self.touch(user_id)
            self.on_notice(user_id, since_ms)
            return
        # We gave the lease back (or lost it) since the sender looked: route the notice
        # again, to whoever holds the lease now, or to ourselves if it is free.
        task = asyncio.create_task(self._reroute(user_id, since_ms), name="owners-reroute")
        self._rerouting.add(task)
        task.add_done_callback(self._rerouting.discard)

    async def _reroute(self, user_id: str, since_ms: int | None) -> None:
        try:
            await self.route(user_id, since_ms)
        except (RedisError, OSError) as exc:
            log.warning("analysis notice not rerouted: Redis unreachable (%s)", type(exc))

    async def _keep(self) -> None:
        """Every third of the lease: renew the leases of users with recent frames, give back
        the others, and take over users whose notice reached no live owner."""
        period = self.lease_ms / 3000
        while True:
            await asyncio.sleep(period)
            try:
                await self._renew_all()
                await self._take_over()
            except (RedisError, OSError) as exc:
                # Our leases may run out meanwhile: lease_of() finds out before committing.
                log.warning("analysis leases: Redis unreachable (%s)", type(exc))

    async def _renew_all(self) -> None:
        """Renew the leases of active users and give back the idle ones, in pipelines of
        :data:`RENEW_BATCH` scripts (one round trip each, however many users)."""
        now = self._clock()
        held = list(self._held.items())
        for start in range(0, len(held), RENEW_BATCH):
            batch = held[start : start + RENEW_BATCH]
            async with self._client.pipeline(transaction=False) as pipe:
                for user_id, (lease, active) in batch:
                    script = self._release if now - active > self.lease_ms / 1000 else self._renew
                    args: list[str | int] = [lease.value]
                    if script is self._renew:
                        args.append(self.lease_ms)
                    await script(keys=[OWNER + user_id], args=args, client=pipe)
                results = await pipe.execute()
            for (user_id, (_, active)), kept in zip(batch, results, strict=True):
                if now - active > self.lease_ms / 1000 or not kept:
                    self._lost(user_id)

    async def _take_over(self) -> None:
        horizon = self._clock() - 2 * self.lease_ms / 1000
        while self._forwarded and next(iter(self._forwarded.values())) < horizon:
            self._forwarded.popitem(last=False)
        for user_id in list(self._forwarded):
            if await self._client.exists(OWNER + user_id):
                continue
            self._forwarded.pop(user_id, None)
            if await self._take(user_id) is not None:
                log.info("analysis leases: took over a user whose owner went away")
                self.on_notice(user_id, None)

    def touch(self, user_id: str) -> None:
        """Mark ``user_id`` as having fresh frames (keeps its lease renewed)."""
        entry = self._held.get(user_id)
        if entry is not None:
            self._held[user_id] = (entry[0], self._clock())


class EraseAnnouncer:
    """The erase hook of a node with owners: ``forget`` the user here and announce the erase
    to every node (in a task: erase hooks are synchronous; the store's erase epoch, not this
    notice, is what makes the erase final)."""

    def __init__(self, forget: Callable[[str], None], owners: RedisOwners) -> None:
        self._forget = forget
        self._owners = owners
        self._tasks: set[asyncio.Task[None]] = set()

    def __call__(self, user_id: str) -> None:
        self._forget(user_id)
        task = asyncio.create_task(self._announce(user_id), name="announce-erase")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _announce(self, user_id: str) -> None:
        try:
            async with asyncio.timeout(self._owners.lease_ms / 1000):
                await self._owners.announce_erase(user_id)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("could not announce an erase to the other nodes (%s)", type(exc))

    async def close(self) -> None:
        """Wait for the announcements under way."""
        await asyncio.gather(*self._tasks, return_exceptions=True)
