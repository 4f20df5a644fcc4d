"""The fleet view: what ``/ops`` shows, computed from the members' records. Pure, no I/O.

:class:`FleetWindow` keeps the records of the last few samples and turns them into a
:class:`dict` ready for JSON (:meth:`FleetWindow.view`):

* totals and gauges summed over the nodes that are up — each a sum of the same samples the
  nodes' ``/metrics`` show, so the page and a scrape agree;
* rates per second over the window, per node (from its oldest reading in the window) and
  then summed, so a node that restarts (its counters start again at zero) or goes down
  never makes a rate negative;
* the estimated spend by tier (every service: LLM, images, clips, storage, pushes), since
  each node started and in dollars an hour over the window;
* latency percentiles from the histogram buckets gained over the window (as
  ``histogram_quantile`` over ``rate(…_bucket[10s])``), in milliseconds, ``None`` when
  nothing was observed.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from server.ops.membership import Member
from server.ops.node import NodeRecord, newest

WINDOW_SAMPLES = 11
"""Samples kept (one a second): rates and percentiles cover the last ten seconds."""
ERRORS_SHOWN = 20
RATES = {
    "deltas_per_s": "deltas_published",
    "pushes_per_s": "deltas_pushed",
    "frames_per_s": "frames_accepted",
    "analyses_per_s": "analyses",
    "avatars_per_s": "avatar_ok",
    "errors_per_s": "errors_logged",
}
Buckets = Sequence[tuple[float, float]]


@dataclass(frozen=True, slots=True)
class Sample:
    """The members at one moment (``t`` in epoch seconds)."""

    t: float
    members: tuple[Member, ...]
    membership_ok: bool


def quantile(q: float, cumulative: Buckets) -> float | None:
    """The ``q`` quantile of cumulative histogram buckets, interpolated within a bucket
    like Prometheus's ``histogram_quantile``; ``None`` for an empty histogram."""
    if not cumulative or cumulative[-1][1] <= 0:
        return None
    rank = q * cumulative[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in cumulative:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # the top bucket has no upper edge: its lower one
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound


def bucket_gain(new: Buckets, old: Buckets | None) -> list[tuple[float, float]]:
    """The observations between two readings of one histogram (all of ``new`` if the node
    restarted or had no earlier reading)."""
    if (
        old is None
        or len(old) != len(new)
        or any(o[1] > n[1] for o, n in zip(old, new, strict=True))
    ):
        return list(new)
    return [(n[0], n[1] - o[1]) for o, n in zip(old, new, strict=True)]


def _add(into: list[tuple[float, float]], more: Buckets) -> list[tuple[float, float]]:
    if not into:
        return list(more)
    if len(into) != len(more):
        return into
    return [(a[0], a[1] + b[1]) for a, b in zip(into, more, strict=True)]


def _percentiles(buckets: Buckets) -> dict[str, float | None]:
    out: dict[str, float | None] = {"count": buckets[-1][1] if buckets else 0.0}
    for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
        value = quantile(q, buckets)
        out[name] = None if value is None else round(value * 1000, 2)
    return out


def _sum(records: Sequence[NodeRecord], part: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for record in records:
        values: Mapping[str, float] = getattr(record, part)
        for key, value in values.items():
            out[key] = out.get(key, 0.0) + value
    return out


class FleetWindow:
    """The last :data:`WINDOW_SAMPLES` samples of the membership, and the view of them."""

    def __init__(self) -> None:
        self._samples: deque[Sample] = deque(maxlen=WINDOW_SAMPLES)

    def add(self, sample: Sample) -> None:
        self._samples.append(sample)

    def view(self, self_id: str) -> dict[str, Any]:
        """The page's data (see the module docstring); empty before the first sample."""
        if not self._samples:
            return {"nodes": [], "t": 0}
        now, first = self._samples[-1], self._samples[0]
        up = [m.record for m in now.members if m.up]
        span = now.t - first.t
        rates = {name: 0.0 for name in RATES}
        push: list[tuple[float, float]] = []
        ack: list[tuple[float, float]] = []
        llm_usd_per_s = 0.0
        usd_per_s: dict[str, float] = {}
        baselines = self._baselines()
        for record in up:
            before = baselines.get(record.node_id)
            if before is None or before.started_at != record.started_at:
                continue  # restarted after its oldest reading here: no rate from it yet
            node_span = record.seen_at - before.seen_at
            if node_span <= 0:
                continue  # one reading only: a rate needs two
            for name, key in RATES.items():
                gain = record.counters.get(key, 0.0) - before.counters.get(key, 0.0)
                rates[name] += max(0.0, gain) / node_span
            spent = record.counters.get("llm_cost_usd", 0.0) - before.counters.get(
                "llm_cost_usd", 0.0
            )
            llm_usd_per_s += max(0.0, spent) / node_span
            for tier, usd in record.spend.items():
                gain = max(0.0, usd - before.spend.get(tier, 0.0))
                usd_per_s[tier] = usd_per_s.get(tier, 0.0) + gain / node_span
            push = _add(
                push, bucket_gain(record.histograms.get("push", []), before.histograms.get("push"))
            )
            ack = _add(
                ack, bucket_gain(record.histograms.get("ack", []), before.histograms.get("ack"))
            )
        counters = _sum(up, "counters")
        gauges = _sum(up, "gauges")
        hits, misses = counters.get("cache_hit", 0.0), counters.get("cache_miss", 0.0)
        return {
            "t": now.t,
            "self": self_id,
            "window_s": round(span, 1),
            "membership_ok": now.membership_ok,
            "nodes": [self._node(m, now.t) for m in sorted(now.members, key=_order)],
            "nodes_up": len(up),
            "nodes_down": len(now.members) - len(up),
            "connections": _sum(up, "connections"),
            "rates": {k: round(v, 3) for k, v in rates.items()},
            "llm_usd_per_h": round(llm_usd_per_s * 3600, 4),
            "spend_by_tier": _sum(up, "spend"),
            "usd_per_h_by_tier": {k: round(v * 3600, 4) for k, v in usd_per_s.items()},
            "push_ms": _percentiles(push),
            "ack_ms": _percentiles(ack),
            "totals": counters,
            "gauges": gauges,
            "cache_hit_ratio": None if hits + misses == 0 else round(hits / (hits + misses), 4),
            "errors": [
                {**e_json, "node": r.name}
                for r, e_json in _errors(up + [m.record for m in now.members if not m.up])
            ],
        }

    def _baselines(self) -> dict[str, NodeRecord]:
        """Each node's oldest record in the window from its current run (a node that joined
        or restarted within the window counts from its first reading, not from none)."""
        oldest: dict[str, NodeRecord] = {}
        for sample in self._samples:
            for member in sample.members:
                record = member.record
                known = oldest.get(record.node_id)
                if member.up and (known is None or known.started_at != record.started_at):
                    oldest[record.node_id] = record
        return oldest

    @staticmethod
    def _node(member: Member, now: float) -> dict[str, Any]:
        r = member.record
        return {
            "id": r.node_id,
            "name": r.name,
            "version": r.version,
            "up": member.up,
            "uptime_s": round(r.seen_at - r.started_at, 1),
            "last_seen_s": round(max(0.0, now - r.seen_at), 1),
            "connections": r.connections,
            "connections_total": sum(r.connections.values()),
            "rss_bytes": r.rss_bytes,
            "broker": r.broker,
            "broker_ok": r.broker_ok,
            "store": r.store,
            "store_ok": r.store_ok,
            "dead_letters_today": r.counters.get("avatar_failures_today", 0.0),
        }


def _order(member: Member) -> tuple[bool, str]:
    return (not member.up, member.record.name)


def _errors(records: Sequence[NodeRecord]) -> list[tuple[NodeRecord, dict[str, Any]]]:
    tagged = [(r, e) for r in records for e in r.errors]
    keep = {id(e) for e in newest((e for _, e in tagged), ERRORS_SHOWN)}
    chosen = [(r, e) for r, e in tagged if id(e) in keep]
    chosen.sort(key=lambda pair: pair[1].t_ms, reverse=True)
    return [
        (r, {"t_ms": e.t_ms, "level": e.level, "source": e.source, "exception": e.exception})
        for r, e in chosen
    ]
