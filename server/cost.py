"""The cost of each user, live: :class:`CostMeter` keeps today's
:class:`~brain.cost.CostPerUser` of the users this node served, by service, and exports it.

Every billed thing passes through :meth:`CostMeter.add` with its user, service and dollars:
LLM calls (the guard's cost hook, :meth:`CostMeter.llm_hook`), avatar images and clips (the
saga), frames stored (a frames hook, priced as packed writes) and pushes (the hub's
per-user sums of messages and frame bytes, :class:`~server.push.hub.PushCounts`, billed in
one go at each flush: never a write per push). Each adds to

- ``companion_cost_usd_total{tier, service}``: dollars by tier and service (both fixed
  sets: tiers come from the settings, at most eight; services are :class:`~brain.cost.Service`);
- the user's day, kept in memory for at most ``max_users`` users (least recently billed
  out) and readable through :meth:`CostMeter.today` (the tier route shows it);
- an anomaly, once per user and day, when the day costs more than the user's tier allows:
  ``companion_cost_anomalies_total{tier}`` and a WARNING naming the tier and the figures,
  never the user (alert rule ``CompanionCostAnomaly`` in deploy/prometheus/alerts.yml).

A node meters what it did itself; in a cluster the per-user day is per node, the metric
sums over nodes. The usage ledger keeps the durable record per user, day and service: the
guard writes the LLM's share with each call, and :meth:`CostMeter.flush` writes the other
services' (``images_usd``, ``clips_usd``, ``storage_usd``, ``pushes_usd``) behind, every
:data:`FLUSH_EVERY_S` and at shutdown; a failed flush keeps its sums for the next one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from itertools import islice
from typing import Final, Protocol

from prometheus_client import CollectorRegistry, Counter

from brain.analyst.base import AnalysisRequest, utc_day
from brain.analyst.guard import FallbackReason
from brain.cost import CostPerUser, Service
from brain.model import Frame
from brain.prices import frames_cost, pushed_bytes_cost
from brain.tiers import Limit, Tier, Tiers
from server.push.hub import PushCounts, Pushed
from server.tiers import TierBook

log = logging.getLogger(__name__)

BILL_AT_ONCE: Final = 200
"""Users whose pushes a flush bills between two turns of the event loop (a few ms of work)."""

FLUSH_AT_ONCE: Final = 128
"""User-days a flush writes concurrently (bounded: a DynamoDB ledger takes them through its
connection pool)."""

MAX_USERS: Final = 100_000
FLUSH_EVERY_S: Final = 10.0
"""How often the service costs are written to the usage ledger: a few writes a minute per
active user, not one per frame batch."""


class CostLedger(Protocol):
    """Where the service costs go (the store has this method)."""

    async def add_service_costs(self, user_id: str, day: str, costs: Mapping[str, float]) -> None:
        """Add dollars to the user's day by ``<service>_usd`` field."""
        ...


class CostMeter:
    """See the module docstring. ``tiers`` resolves the tier a caller names; ``book``
    gives the tier of a user when the caller does not know it."""

    def __init__(
        self,
        registry: CollectorRegistry,
        book: TierBook,
        *,
        clock: Callable[[], float] = time.time,
        max_users: int = MAX_USERS,
    ) -> None:
        if max_users < 1:
            raise ValueError(f"max_users must be positive, got {max_users}")
        self._book = book
        self._clock = clock
        self._max_users = max_users
        self._days: OrderedDict[str, CostPerUser] = OrderedDict()
        self._pending: dict[tuple[str, str], dict[str, float]] = {}
        self._flagged: set[tuple[str, str]] = set()
        self._unbilled: dict[str, Pushed] = {}
        """Pushes a flush took and has not billed yet (it bills them a slice at a time)."""
        self._unwritten: dict[tuple[str, str], dict[str, float]] = {}
        """User-days a flush took and has not handed to the ledger yet."""
        self.cost = Counter(
            "companion_cost_usd",
            "Estimated US dollars spent, by tier and service (brain.prices, dated).",
            ["tier", "service"],
            registry=registry,
        )
        self.anomalies = Counter(
            "companion_cost_anomalies",
            "Users whose day cost more than their tier allows (once per user and day).",
            ["tier"],
            registry=registry,
        )
        self.pushed_bytes = Counter(
            "companion_pushed_bytes",
            "WebSocket frame bytes pushed to devices, by the users' tier (billed as pushes).",
            ["tier"],
            registry=registry,
        )
        self.pushes: PushCounts | None = None
        """The hub's push counts, billed at each :meth:`flush` (``None``: none to bill)."""
        self.over_limit = Counter(
            "companion_tier_limits",
            "Requests that went over a tier limit and were degraded, by tier and limit.",
            ["tier", "limit"],
            registry=registry,
        )
        for tier in book.tiers.values():
            self.anomalies.labels(tier.name)
            self.pushed_bytes.labels(tier.name)
            for service in Service:
                self.cost.labels(tier.name, service.value)

    @property
    def tiers(self) -> Tiers:
        return self._book.tiers

    def add(
        self, user_id: str, service: Service, usd: float, *, tier: str | None = None
    ) -> CostPerUser:
        """Bill ``usd`` of ``service`` to ``user_id`` today (UTC, by the meter's clock: money
        is billed when it is spent), under ``tier`` (a name; default: the user's tier as the
        book knows it). Returns the user's day.

        Raises :class:`ValueError` for negative dollars.
        """
        the_tier = self._book.of(user_id) if tier is None else self.tiers.of(tier)
        updated = self._bill(user_id, utc_day(int(self._clock() * 1000)), service, usd, the_tier)
        self.cost.labels(the_tier.name, service.value).inc(usd)
        return updated

    def _bill(
        self, user_id: str, day: str, service: Service, usd: float, tier: Tier
    ) -> CostPerUser:
        """:meth:`add` without the dollars metric (its caller counts them)."""
        current = self._days.get(user_id)
        if current is None or current.day != day:
            current = CostPerUser(user_id, day, tier.name)
        updated = current.plus(service, usd, tier=tier.name)
        self._days[user_id] = updated
        self._days.move_to_end(user_id)
        while len(self._days) > self._max_users:
            self._days.popitem(last=False)
        if service is not Service.LLM:  # the guard writes the LLM's share itself
            pending = self._pending.setdefault((user_id, day), {})
            field = f"{service.value}_usd"
            pending[field] = pending.get(field, 0.0) + usd
        self._check(updated, tier)
        return updated

    def bill_pushes(self, pushed: Mapping[str, Pushed]) -> None:
        """Bill each user the egress of what was pushed to their devices (and count the
        bytes by tier): one addition per user, however many pushes; the metrics once per
        tier (20,000 users are billed in ~0.1 s, not 0.2)."""
        day = utc_day(int(self._clock() * 1000))
        usd_of: dict[str, float] = {}
        bytes_of: dict[str, int] = {}
        for user_id, sums in pushed.items():
            usd = pushed_bytes_cost(sums.messages, sums.bytes)
            tier = self._book.of(user_id)
            self._bill(user_id, day, Service.PUSHES, usd, tier)
            usd_of[tier.name] = usd_of.get(tier.name, 0.0) + usd
            bytes_of[tier.name] = bytes_of.get(tier.name, 0) + sums.bytes
        for name, usd in usd_of.items():
            self.cost.labels(name, Service.PUSHES.value).inc(usd)
            self.pushed_bytes.labels(name).inc(bytes_of[name])

    async def flush(self, ledger: CostLedger) -> int:
        """Bill what the hub pushed since the last flush (:attr:`pushes`), then write the
        service costs added since the last flush to ``ledger``; return the user-days
        written. A user-day that fails stays pending (bounded to ``max_users``: beyond, the
        oldest are dropped with a warning)."""
        if self.pushes is not None:
            # A slice at a time, letting the event loop push between slices: billing
            # 20,000 users at once held every delta back for ~0.2 s. What is not billed
            # yet stays where an erase meanwhile can drop it (forget).
            self._unbilled = self.pushes.take()
            while self._unbilled:
                now_billed = dict(islice(self._unbilled.items(), BILL_AT_ONCE))
                for user_id in now_billed:
                    del self._unbilled[user_id]
                self.bill_pushes(now_billed)
                if self._unbilled:
                    await asyncio.sleep(0)
        self._unwritten, self._pending = self._pending, {}
        written = failed = 0
        last_error: BaseException | None = None
        # A slice at a time, concurrently: a store that groups writes (SQLite) commits a
        # slice in a transaction or two, where one write after the other cost a
        # transaction and an fsync per user-day (20,000 users: 2,000 a second). What is
        # not written yet stays where an erase meanwhile can drop it (forget).
        while self._unwritten:
            some = list(islice(self._unwritten.items(), FLUSH_AT_ONCE))
            for key, _ in some:
                del self._unwritten[key]
            outcomes = await asyncio.gather(
                *(ledger.add_service_costs(user_id, day, costs) for (user_id, day), costs in some),
                return_exceptions=True,
            )
            for ((user_id, day), costs), outcome in zip(some, outcomes, strict=True):
                if not isinstance(outcome, BaseException):
                    written += 1
                    continue
                if not isinstance(outcome, Exception):
                    raise outcome  # cancelled: not a store failure
                # the store is down: keep the sums for the next flush
                failed, last_error = failed + 1, outcome
                mine = self._pending.setdefault((user_id, day), {})
                for field, usd in costs.items():
                    mine[field] = mine.get(field, 0.0) + usd
        if failed:  # one line a flush, however many user-days the store refused
            log.warning(
                "cannot write service costs of %d user-day(s) to the usage ledger: %r",
                failed,
                last_error,
            )
        dropped = 0
        while len(self._pending) > self._max_users:
            self._pending.pop(next(iter(self._pending)))
            dropped += 1
        if dropped:
            log.warning(
                "service costs of %d user-day(s) dropped: too many waiting for the ledger", dropped
            )
        return written

    async def keep_flushing(self, ledger: CostLedger, every_s: float = FLUSH_EVERY_S) -> None:
        """Flush to ``ledger`` every ``every_s`` seconds until cancelled (then once more)."""
        try:
            while True:
                await asyncio.sleep(every_s)
                await self.flush(ledger)
        finally:
            await asyncio.shield(self.flush(ledger))

    def today(self, user_id: str) -> CostPerUser:
        """The user's cost today (UTC) as this node metered it."""
        day = utc_day(int(self._clock() * 1000))
        current = self._days.get(user_id)
        if current is None or current.day != day:
            return CostPerUser(user_id, day, self._book.of(user_id).name)
        return current

    def limited(self, tier: Tier, limit: Limit) -> None:
        """Count one request that went over ``limit`` of ``tier`` and was degraded."""
        self.over_limit.labels(tier.name, limit.value).inc()

    def llm_limited(self, tier: str, reason: FallbackReason) -> None:
        """The guard's limit hook (:data:`brain.analyst.guard.LimitHook`): a window that
        went over the tier's LLM budget or caps."""
        limit = Limit.LLM_BUDGET if reason is FallbackReason.BUDGET else Limit.LLM_CAP
        self.limited(self.tiers.of(tier), limit)

    def llm_hook(self, request: AnalysisRequest, tier: str | None, usd: float) -> None:
        """The guard's cost hook (:data:`brain.analyst.guard.CostHook`)."""
        name = tier if tier is not None else self.tiers.tier_of(request.profile).name
        self.add(request.user_id, Service.LLM, usd, tier=name)

    async def frames_stored(self, by_user: Mapping[str, Sequence[Frame]]) -> None:
        """A frames hook: bill each user the estimated writes of the frames just stored."""
        for user_id, frames in by_user.items():
            if frames:
                self.add(user_id, Service.STORAGE, frames_cost(len(frames)))

    def forget(self, user_id: str) -> None:
        """Drop the user's day and unwritten costs (after an erase)."""
        self._days.pop(user_id, None)
        if self.pushes is not None:
            self.pushes.forget(user_id)
        self._unbilled.pop(user_id, None)
        self._unwritten = {k: v for k, v in self._unwritten.items() if k[0] != user_id}
        self._pending = {k: v for k, v in self._pending.items() if k[0] != user_id}
        self._flagged = {key for key in self._flagged if key[0] != user_id}

    def _check(self, day: CostPerUser, tier: Tier) -> None:
        key = (day.user_id, day.day)
        if key in self._flagged or not day.anomalous(tier):
            return
        self._flagged = {k for k in self._flagged if k[1] == day.day}  # yesterday's go
        self._flagged.add(key)
        self.anomalies.labels(tier.name).inc()
        log.warning(
            "a %s user's day costs $%.4f, over the tier's $%.2f (largest: %s)",
            tier.name,
            day.total_usd,
            tier.day_cost_alert_usd,
            max(day.by_service, key=lambda s: day.by_service[s]).value,
        )
