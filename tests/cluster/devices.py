"""Devices of a cluster test or benchmark: WebSockets that follow their user's versions.

A :class:`Device` holds one lean WebSocket (:mod:`clients.connect.wsclient`: callbacks, no
task per connection, so a benchmark can hold thousands) to a node, says ``hello``, and keeps
the newest version of its user it was shown: a snapshot sets it, a delta on top of it
(``base <= version < delta.version``) moves it on, a delta past a gap makes it ask for a
snapshot (``hello`` with ``since``). Each delta's push latency (arrival minus the server's
commit time ``t``, one clock on loopback) is kept. A watch also sends frames and keeps the
ones acked (acks come once frames are durable).

A dropped connection is reopened under :mod:`brain.backoff` to a node that accepts (tried
at random, as a load balancer spreads them),
with ``hello`` since the device's version, and the unacked batches are sent again (the
server takes re-sent frames idempotently).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import orjson

from brain.backoff import Backoff
from brain.model import Frame
from clients.connect.wsclient import HandshakeFailed, WSClient, open_ws
from server.protocol import frame_to_wire

RECONNECT = Backoff(attempts=None, base=0.05, cap=1.0)
"""How a dropped device comes back: quickly, and never gives up (the test's deadline ends
the wait)."""
RANDOM = random.Random()
"""Jitter of the waits after a refusal (not cryptographic)."""
CONNECTING_AT_ONCE = 200
"""Handshakes in flight at once when a fleet connects."""


@dataclass
class Batch:
    """Frames sent under ``seq`` and not acked yet."""

    seq: int
    frames: list[Frame]
    acked: asyncio.Future[None]


@dataclass(eq=False)
class Device:
    """One WebSocket device of ``user`` (``kind`` phone or watch) on the nodes at ``urls``
    (``ws://…/v1/ws``), starting with ``urls[home]``."""

    user: str
    kind: str
    token: str
    urls: Sequence[str]
    home: int = 0
    version: int = 0
    latencies: list[float] = field(default_factory=list)
    """Seconds from commit to arrival of each delta that moved this device on."""
    moves: list[tuple[int, float]] = field(default_factory=list)
    """(version, epoch seconds it arrived) of each snapshot or delta that moved it on."""
    acked: list[Frame] = field(default_factory=list)
    reconnects: int = 0
    back_at: float = 0.0
    """When (epoch seconds) the last reconnect succeeded."""
    errors: list[str] = field(default_factory=list)
    """The codes of ``error`` messages the server sent."""
    _conn: WSClient | None = None
    _seq: int = 0
    _pending: dict[int, Batch] = field(default_factory=dict)
    _stopping: bool = False
    _reconnecting: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.is_open

    async def connect(self, connect_s: float = 10.0) -> None:
        """Open the WebSocket to the current node and say hello (since the version held).
        Raises what :func:`~clients.connect.wsclient.open_ws` raises."""
        headers = {"Authorization": f"Bearer {self.token}"}
        url = self.urls[self.home % len(self.urls)]
        conn = await open_ws(
            url, headers, self._on_text, self._on_close, owner=self, connect_timeout=connect_s
        )
        self._conn = conn
        self._hello()
        for batch in self._pending.values():
            self._send_batch(batch)

    async def send(self, frames: Iterable[Frame], within: float = 30.0) -> None:
        """Send ``frames`` in one batch and return once they are acked (resent after a
        reconnect); raises TimeoutError after ``within`` seconds."""
        self._seq += 1
        batch = Batch(self._seq, list(frames), asyncio.get_running_loop().create_future())
        self._pending[batch.seq] = batch
        self._send_batch(batch)
        async with asyncio.timeout(within):
            await asyncio.shield(batch.acked)

    async def close(self) -> None:
        """Close for good (no reconnect)."""
        self._stopping = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            try:
                async with asyncio.timeout(5):
                    await conn.closed
            except TimeoutError:
                conn.abort()

    # -- wire --------------------------------------------------------------------------

    def _hello(self) -> None:
        hello: dict[str, object] = {"op": "hello", "client": "cluster-device"}
        if self.version:
            hello["since"] = self.version
        self._send(hello)

    def _send_batch(self, batch: Batch) -> None:
        wire = [frame_to_wire(f) for f in batch.frames]
        self._send({"op": "frames", "seq": batch.seq, "frames": wire})

    def _send(self, message: Mapping[str, object]) -> None:
        if self._conn is not None:
            self._conn.send_text(orjson.dumps(message))

    def _on_text(self, conn: WSClient, data: bytes, arrived: float) -> None:
        message = orjson.loads(data)
        op = message.get("op")
        if op == "snapshot":
            if int(message["version"]) > self.version:
                self.version = int(message["version"])
                self.moves.append((self.version, arrived))
        elif op == "delta":
            version = int(message["version"])
            base = int(message.get("base", version - 1))
            if version <= self.version:
                return
            if base <= self.version:
                self.version = version
                self.moves.append((version, arrived))
                self.latencies.append(max(0.0, arrived - float(message["t"]) / 1000))
            else:  # a gap: what came in between is in a snapshot
                self._hello()
        elif op == "ack":
            batch = self._pending.pop(int(message["seq"]), None)
            if batch is not None:
                self.acked.extend(batch.frames)
                if not batch.acked.done():
                    batch.acked.set_result(None)
        elif op == "error":
            self.errors.append(str(message.get("code")))

    def _on_close(self, conn: WSClient, code: int | None) -> None:
        if conn is not self._conn or self._stopping:
            return
        self._conn = None
        self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        await self.connect_until(float("inf"), switch=True)
        self.reconnects += 1
        self.back_at = time.time()

    async def connect_until(self, deadline: float, *, switch: bool = False) -> None:
        """Connect, retrying under :data:`RECONNECT` until ``time.monotonic()`` passes
        ``deadline`` (then raises TimeoutError). A node that is full (503, 429) is asked
        again after its ``Retry-After``; one that refuses or drops the connection is left
        for another node, picked at random, when ``switch``."""
        retry = 0
        while not self._stopping:
            try:
                # 5 s: a loaded node answers slowly; a dead one refuses at once.
                await self.connect(connect_s=5.0)
                return
            except HandshakeFailed as refused:
                failure: Exception = refused
                pause = refused.retry_after if refused.status in (429, 503) else None
            except (OSError, TimeoutError) as lost:
                failure, pause = lost, None
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.user}'s {self.kind} could not connect") from failure
            if pause is not None:  # the node's hint, jittered: the refused do not return as one
                await asyncio.sleep(min(pause, 5) * (0.5 + RANDOM.random()))
                continue
            if switch and len(self.urls) > 1:  # another node, as a load balancer would pick
                self.home = (self.home + RANDOM.randrange(1, len(self.urls))) % len(self.urls)
            await RECONNECT.wait(retry)
            retry += 1


class Fleet:
    """Devices connected together; which of them hold a user's newest version."""

    def __init__(self, devices: Sequence[Device]) -> None:
        self.devices = list(devices)

    async def connect(self, within: float = 120.0) -> float:
        """Connect every device, :data:`CONNECTING_AT_ONCE` handshakes at a time (a node
        that is full is asked again after its ``Retry-After``); the seconds it took. Raises
        TimeoutError for a device that could not connect within ``within`` seconds."""
        started = time.monotonic()
        gate = asyncio.Semaphore(CONNECTING_AT_ONCE)

        async def one(device: Device) -> None:
            async with gate:
                await device.connect_until(started + within)

        await asyncio.gather(*(one(d) for d in self.devices))
        return time.monotonic() - started

    def behind(self, latest: Mapping[str, int]) -> list[Device]:
        """The devices whose version is older than ``latest[user]``."""
        return [d for d in self.devices if d.version < latest.get(d.user, 0)]

    def latencies(self) -> list[float]:
        return [s for d in self.devices for s in d.latencies]

    def reached(self, latest: Mapping[str, int]) -> float | None:
        """When (epoch seconds) the last device got its user's ``latest[user]`` version or a
        later one; ``None`` while some device is still behind."""
        last = 0.0
        for device in self.devices:
            target = latest.get(device.user, 0)
            if target == 0:
                continue
            when = next((t for v, t in device.moves if v >= target), None)
            if when is None:
                return None
            last = max(last, when)
        return last

    async def close(self) -> None:
        await asyncio.gather(*(d.close() for d in self.devices))
