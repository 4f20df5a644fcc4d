"""What one node tells the cluster about itself: a :class:`NodeRecord`, read from its registry.

A node's figures come from the same Prometheus registry that ``/metrics`` renders
(:func:`read_registry`), so the fleet page and a scrape of the node always agree. The record
carries counter totals and histogram buckets, not rates: whoever reads two records computes
rates and percentiles over the interval between them (:mod:`server.ops.fleet`), the way
Prometheus does. Its JSON form is what the heartbeat stores in Redis.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from server.ops.errors import ErrorEvent

Labels = tuple[tuple[str, str], ...]
Samples = Mapping[tuple[str, Labels], float]

COUNTERS: dict[str, tuple[str, dict[str, str]]] = {
    # record key: (sample name, labels that must match; other labels are summed over)
    "deltas_published": ("companion_deltas_published_total", {}),
    "deltas_pushed": ("companion_deltas_pushed_total", {}),
    "frames_accepted": ("companion_frames_accepted_total", {}),
    "frames_rejected": ("companion_frames_rejected_total", {}),
    "analyses": ("companion_analyses_total", {}),
    "analysis_errors": ("companion_analysis_errors_total", {}),
    "avatar_ok": ("companion_avatar_generations_total", {"result": "ok"}),
    "avatar_error": ("companion_avatar_generations_total", {"result": "error"}),
    "cache_hit": ("companion_avatar_cache_total", {"result": "hit"}),
    "cache_miss": ("companion_avatar_cache_total", {"result": "miss"}),
    "avatar_failures": ("companion_avatar_failures_total", {}),
    "llm_calls": ("companion_llm_calls_total", {}),
    "llm_cost_usd": ("companion_llm_cost_usd_total", {}),
    "llm_fallbacks_budget": ("companion_llm_fallbacks_total", {"reason": "budget"}),
    "store_errors": ("companion_store_errors_total", {}),
    "http_errors": ("companion_http_errors_total", {}),
    "slow_peer_closes": ("companion_slow_peer_closes_total", {}),
    "errors_logged": ("companion_errors_logged_total", {"level": "error"}),
}
GAUGES: dict[str, str] = {
    "analysis_queue": "companion_analysis_queue",
    "analysis_running": "companion_analysis_running",
    "avatar_waiting": "companion_avatar_waiting",
    "longpolls": "companion_longpolls_waiting",
    "devices_behind": "companion_devices_behind",
}
HISTOGRAMS: dict[str, str] = {
    "push": "companion_push_latency_seconds",
    "ack": "companion_ack_latency_seconds",
}
SPEND = "companion_cost_usd_total"
"""Estimated dollars by tier and service (:mod:`server.cost`); a record keeps it by tier."""
BROKER_CONNECTED = "companion_broker_connected"
"""The broker's own health gauge, where the broker exports one; else the heartbeat stands in."""


def read_registry(registry: CollectorRegistry) -> dict[tuple[str, Labels], float]:
    """Every sample of ``registry``: (sample name, sorted labels) → value."""
    samples: dict[tuple[str, Labels], float] = {}
    for family in registry.collect():
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def total(samples: Samples, name: str, match: Mapping[str, str] | None = None) -> float:
    """The sum of the samples called ``name`` whose labels include ``match``."""
    wanted = set((match or {}).items())
    return sum(v for (n, labels), v in samples.items() if n == name and wanted <= set(labels))


def by_label(samples: Samples, name: str, label: str) -> dict[str, float]:
    """The samples called ``name``, keyed by the value of ``label``."""
    out: dict[str, float] = {}
    for (n, labels), value in samples.items():
        if n == name:
            key = dict(labels).get(label, "")
            out[key] = out.get(key, 0.0) + value
    return out


def buckets(samples: Samples, name: str) -> list[tuple[float, float]]:
    """A histogram's cumulative buckets, ``(upper bound, count)`` by growing bound."""
    found = [
        (float(dict(labels)["le"]), value)
        for (n, labels), value in samples.items()
        if n == name + "_bucket"
    ]
    return sorted(found)


def resident_memory_bytes() -> int:
    """This process's resident set size (peak RSS where ``/proc`` is missing)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """One node at one moment: who it is, its health, and its figures."""

    node_id: str
    name: str
    version: str
    started_at: float
    seen_at: float
    rss_bytes: int = 0
    broker: str = "memory"
    broker_ok: bool = True
    store: str = "sqlite"
    store_ok: bool = True
    connections: dict[str, float] = field(default_factory=dict)
    spend: dict[str, float] = field(default_factory=dict)
    counters: dict[str, float] = field(default_factory=dict)
    gauges: dict[str, float] = field(default_factory=dict)
    histograms: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    errors: tuple[ErrorEvent, ...] = ()

    def to_json(self) -> bytes:
        data: dict[str, Any] = {
            "node_id": self.node_id,
            "name": self.name,
            "version": self.version,
            "started_at": self.started_at,
            "seen_at": self.seen_at,
            "rss_bytes": self.rss_bytes,
            "broker": self.broker,
            "broker_ok": self.broker_ok,
            "store": self.store,
            "store_ok": self.store_ok,
            "connections": self.connections,
            "spend": self.spend,
            "counters": self.counters,
            "gauges": self.gauges,
            # JSON has no infinity: the +Inf bound is written as null.
            "histograms": {
                k: [[None if le == float("inf") else le, n] for le, n in v]
                for k, v in self.histograms.items()
            },
            "errors": [e.to_json() for e in self.errors],
        }
        return orjson.dumps(data)

    @classmethod
    def from_json(cls, raw: bytes | str) -> NodeRecord:
        """Raises :class:`ValueError` (``orjson.JSONDecodeError`` is one) for a bad record."""
        data = orjson.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("a node record is a JSON object")
        try:
            return cls(
                node_id=str(data["node_id"]),
                name=str(data["name"]),
                version=str(data["version"]),
                started_at=float(data["started_at"]),
                seen_at=float(data["seen_at"]),
                rss_bytes=int(data.get("rss_bytes", 0)),
                broker=str(data.get("broker", "")),
                broker_ok=bool(data.get("broker_ok", False)),
                store=str(data.get("store", "")),
                store_ok=bool(data.get("store_ok", False)),
                connections={str(k): float(v) for k, v in data.get("connections", {}).items()},
                spend={str(k): float(v) for k, v in data.get("spend", {}).items()},
                counters={str(k): float(v) for k, v in data.get("counters", {}).items()},
                gauges={str(k): float(v) for k, v in data.get("gauges", {}).items()},
                histograms={
                    str(k): [(float("inf") if le is None else float(le), float(n)) for le, n in v]
                    for k, v in data.get("histograms", {}).items()
                },
                errors=tuple(ErrorEvent.from_json(e) for e in data.get("errors", [])),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"bad node record: {exc!r}") from None


def figures(samples: Samples) -> dict[str, Any]:
    """The figures a record carries, taken from a registry's samples."""
    return {
        "connections": by_label(samples, "companion_connections", "device"),
        "spend": by_label(samples, SPEND, "tier"),
        "counters": {key: total(samples, name, match) for key, (name, match) in COUNTERS.items()},
        "gauges": {key: total(samples, name) for key, name in GAUGES.items()},
        "histograms": {key: buckets(samples, name) for key, name in HISTOGRAMS.items()},
    }


def broker_connected(samples: Samples) -> bool | None:
    """The broker's own connected gauge, or ``None`` when the broker exports none."""
    values = [v for (n, _), v in samples.items() if n == BROKER_CONNECTED]
    return None if not values else min(values) >= 1


def newest(events: Iterable[ErrorEvent], limit: int) -> list[ErrorEvent]:
    """The ``limit`` newest events, newest first."""
    return sorted(events, key=lambda e: e.t_ms, reverse=True)[:limit]
