"""The ops stage: this node's heartbeat, its health figures, and the fleet view it serves.

:class:`OpsNode` runs one loop, once a second: read this node's registry into a
:class:`~server.ops.node.NodeRecord`, announce it to the membership, list the members, and
compute the fleet view that ``/ops/ws`` sends to each open page (one computation per node
per second, however many pages are open). Every few seconds it also pings the store with a
deadline, for ``companion_store_up`` and the node's store health.

The membership going away (Redis restarting) is a normal event: the loop counts the failed
heartbeat, logs one warning per outage, shows this node alone with ``membership_ok`` false,
and tries again with :mod:`brain.backoff`'s policy until Redis answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Final

from brain.backoff import Backoff
from server.errors import StoreError
from server.ops.errors import ErrorRing
from server.ops.fleet import FleetWindow, Sample
from server.ops.membership import (
    LocalMembership,
    Member,
    Membership,
    MembershipUnavailable,
    build_membership,
)
from server.ops.node import (
    NodeRecord,
    broker_connected,
    figures,
    read_registry,
    resident_memory_bytes as rss,
)
from server.ops.store_errors import count_store_errors
from server.services import PartKey, Services

log = logging.getLogger(__name__)

LOGGERS: Final = ("", "uvicorn.error")
"""Where the error ring listens: the root logger, and uvicorn's, which does not propagate."""
INTERVAL_S = 1.0
STORE_PING_EVERY_S = 5.0
STORE_PING_TIMEOUT_S = 2.0


def package_version() -> str:
    """The installed version of the server (``0+unknown`` outside an installed package)."""
    try:
        return version("companion-push")
    except PackageNotFoundError:
        return "0+unknown"


class OpsNode:
    """This node in the fleet: identity, heartbeat loop and the newest fleet view."""

    def __init__(
        self,
        services: Services,
        membership: Membership,
        *,
        interval_s: float = INTERVAL_S,
        backoff: Backoff | None = None,
    ) -> None:
        settings = services.settings
        self.services = services
        self.membership = membership
        self.node_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.name = f"{socket.gethostname()}:{settings.port}"
        self.version = package_version()
        self.started_at = time.time()
        self.errors = ErrorRing(services.metrics)
        self._redis = not isinstance(membership, LocalMembership)
        self._interval = interval_s
        self._backoff = backoff or Backoff(attempts=None, base=0.5, cap=5.0)
        self._window = FleetWindow()
        self._view: dict[str, Any] = {"nodes": [], "t": 0}
        self._views = 0
        self._changed = asyncio.Condition()
        self._beat_ok = True
        self._last_beat_ok = time.time()
        self._store_ok = True
        self._next_store_ping = 0.0
        self._failure_day = ""
        self._failures_at_day_start = 0.0
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        metrics = self.services.metrics
        metrics.started.set(self.started_at)
        metrics.cluster_heartbeat_age.set_function(lambda: time.time() - self._last_beat_ok)
        for result in ("ok", "error"):
            metrics.cluster_heartbeats.labels(result)
        count_store_errors(self.services.store, metrics)
        for logger in LOGGERS:
            logging.getLogger(logger).addHandler(self.errors)
        await self.tick()  # the node is a member before the server says it is ready
        self._task = asyncio.create_task(self._run(), name="ops-heartbeat")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await self.membership.leave(self.node_id)
        except MembershipUnavailable as exc:
            log.warning("could not leave the cluster cleanly (%s); the heartbeat expires", exc)
        await self.membership.close()
        for logger in LOGGERS:
            logging.getLogger(logger).removeHandler(self.errors)

    async def _run(self) -> None:
        retry = 0
        while True:
            try:
                ok = await self.tick()
            except Exception:
                # A bug here must not end the heartbeat for good: the node would look dead
                # to the cluster while it serves.
                log.exception("ops heartbeat failed")
                ok = False
            if ok:
                retry = 0
                await asyncio.sleep(self._interval)
            else:
                await self._backoff.wait(retry)
                retry += 1

    # -- one beat --------------------------------------------------------------------

    async def tick(self) -> bool:
        """Announce this node, list the members, update the view; False if Redis failed."""
        now = time.time()
        await self._ping_store(now)
        record = self.record(now)
        try:
            await self.membership.beat(record)
            members = await self.membership.members()
        except MembershipUnavailable as exc:
            self.services.metrics.cluster_heartbeats.labels("error").inc()
            if self._beat_ok:
                log.warning("cluster membership unavailable (%s); retrying", exc)
            self._beat_ok = False
            members = [Member(record, up=True)]
            ok = False
        else:
            self.services.metrics.cluster_heartbeats.labels("ok").inc()
            if not self._beat_ok:
                log.info("cluster membership back")
            self._beat_ok = True
            self._last_beat_ok = time.time()
            ok = True
        up = sum(1 for m in members if m.up)
        self.services.metrics.cluster_nodes.labels("up").set(up)
        self.services.metrics.cluster_nodes.labels("down").set(len(members) - up)
        self._window.add(Sample(now, tuple(members), ok))
        async with self._changed:
            self._view = self._window.view(self.node_id)
            self._views += 1
            self._changed.notify_all()
        return ok

    def record(self, now: float) -> NodeRecord:
        """This node now, read from its registry."""
        metrics = self.services.metrics
        resident = rss()
        metrics.resident_memory.set(resident)
        samples = read_registry(metrics.registry)
        parts = figures(samples)
        parts["counters"]["avatar_failures_today"] = self._failures_today(
            now, parts["counters"].get("avatar_failures", 0.0)
        )
        connected = broker_connected(samples)
        settings = self.services.settings
        return NodeRecord(
            node_id=self.node_id,
            name=self.name,
            version=self.version,
            started_at=self.started_at,
            seen_at=now,
            rss_bytes=resident,
            broker="redis" if self._redis else "memory",
            broker_ok=self._beat_ok if connected is None else connected,
            store=settings.store,
            store_ok=self._store_ok,
            errors=tuple(self.errors.recent()),
            **parts,
        )

    def _failures_today(self, now: float, failures: float) -> float:
        """Avatar sagas that ended failed since midnight UTC (on this node)."""
        day = datetime.fromtimestamp(now, UTC).date().isoformat()
        if day != self._failure_day:
            # The first day counts from the start of the process: it has not seen before.
            self._failures_at_day_start = 0.0 if not self._failure_day else failures
            self._failure_day = day
        return failures - self._failures_at_day_start

    async def _ping_store(self, now: float) -> None:
        if now < self._next_store_ping:
            return
        self._next_store_ping = now + STORE_PING_EVERY_S
        try:
            async with asyncio.timeout(STORE_PING_TIMEOUT_S):
                await self.services.store.ping()
        except (StoreError, OSError, TimeoutError):
            self._store_ok = False
        else:
            self._store_ok = True
        self.services.metrics.store_up.set(1 if self._store_ok else 0)

    # -- the view --------------------------------------------------------------------

    @property
    def view(self) -> dict[str, Any]:
        """The newest fleet view (:meth:`server.ops.fleet.FleetWindow.view`)."""
        return self._view

    async def next_view(self, after: int, within: float) -> tuple[int, dict[str, Any]]:
        """The first view newer than number ``after``, and its number.

        Raises :class:`TimeoutError` if none comes within ``within`` seconds.
        """
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: self._views > after)
            return self._views, self._view


async def ops_stage(services: Services, stack: AsyncExitStack) -> None:
    """Join the cluster and serve the fleet view; leave it first when the server stops."""
    node = OpsNode(services, build_membership(services.settings.broker))
    await node.start()
    stack.push_async_callback(node.stop)
    services.parts.add(OPS, node)


OPS: Final[PartKey[OpsNode]] = PartKey("ops")
"""The key of this node's :class:`OpsNode` in ``Services.parts``."""
