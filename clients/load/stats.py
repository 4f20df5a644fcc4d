"""What a load run measures: counters and latency histograms, mergeable across processes.

:class:`Histogram` keeps counts in logarithmic buckets 1 % wide (from 0.01 ms to beyond an
hour), so memory is bounded however many samples arrive, percentiles are within 1 %, and
the histograms of several worker processes merge by adding counts. The exact maximum is
kept as well. :class:`RunStats` is a run's (or one worker's) numbers; it travels between
processes as the plain dict of :meth:`RunStats.to_dict`.

:func:`markdown_table` and :func:`progress_line` render them for people.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

_FLOOR_MS = 0.01
_GROWTH = 1.01
_LOG_GROWTH = math.log(_GROWTH)

HISTOGRAMS = ("connect", "ack", "push", "change", "poll")
"""connect: TCP + WebSocket handshake; ack: frames sent → ack; push: server commit time
``t`` → delta received; change: the state-change POST's round trip; poll: commit → a
polling watch sees the new state."""

COUNTERS = (
    "opened",
    "reconnects",
    "closed_by_server",
    "frames_sent",
    "frames_acked",
    "batches_sent",
    "acks",
    "snapshots",
    "deltas",
    "versions_pushed",
    "changes",
    "change_errors",
    "change_skipped",
    "requests",
    "bytes_out",
    "bytes_in",
    "polls_changed",
    "server_errors",
    "cpu_us",
)


class Histogram:
    """Latencies in milliseconds; percentiles within 1 %, exact count and maximum."""

    __slots__ = ("buckets", "count", "max", "total")

    def __init__(self) -> None:
        self.buckets: Counter[int] = Counter()
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def add(self, ms: float) -> None:
        index = 0 if ms <= _FLOOR_MS else int(math.log(ms / _FLOOR_MS) / _LOG_GROWTH) + 1
        self.buckets[index] += 1
        self.count += 1
        self.total += ms
        if ms > self.max:
            self.max = ms

    def percentile(self, p: float) -> float:
        """The ``p``-th percentile (0-100) in ms: the upper edge of its bucket, capped at max."""
        if not self.count:
            return math.nan
        rank = max(1, math.ceil(self.count * p / 100))
        seen = 0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= rank:
                return min(self.max, _FLOOR_MS * _GROWTH**index)
        return self.max

    def merge(self, other: Histogram) -> None:
        self.buckets.update(other.buckets)
        self.count += other.count
        self.total += other.total
        self.max = max(self.max, other.max)

    def summary(self) -> dict[str, float]:
        """count, mean, p50, p95, p99 and max (NaN-free: 0 when empty)."""
        if not self.count:
            return {"count": 0, "mean": 0.0, "p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}
        return {
            "count": self.count,
            "mean": round(self.total / self.count, 3),
            "p50": round(self.percentile(50), 3),
            "p95": round(self.percentile(95), 3),
            "p99": round(self.percentile(99), 3),
            "max": round(self.max, 3),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "buckets": {str(k): v for k, v in self.buckets.items()},
            "count": self.count,
            "total": self.total,
            "max": self.max,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Histogram:
        histogram = cls()
        histogram.buckets.update({int(k): int(v) for k, v in data["buckets"].items()})
        histogram.count = int(data["count"])
        histogram.total = float(data["total"])
        histogram.max = float(data["max"])
        return histogram


@dataclass
class RunStats:
    """Counters, error reasons and latency histograms of a run or of one worker."""

    counters: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    histograms: dict[str, Histogram] = field(
        default_factory=lambda: {name: Histogram() for name in HISTOGRAMS}
    )
    open_now: int = 0

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    def error(self, reason: str) -> None:
        self.errors[reason] += 1

    def reset(self) -> None:
        """Forget what was counted so far (the open connections stay counted)."""
        self.counters.clear()
        self.errors.clear()
        self.histograms = {name: Histogram() for name in HISTOGRAMS}

    def merge(self, other: RunStats) -> None:
        self.counters.update(other.counters)
        self.errors.update(other.errors)
        for name, histogram in other.histograms.items():
            self.histograms.setdefault(name, Histogram()).merge(histogram)
        self.open_now += other.open_now

    def to_dict(self) -> dict[str, Any]:
        return {
            "counters": dict(self.counters),
            "errors": dict(self.errors),
            "histograms": {k: h.to_dict() for k, h in self.histograms.items()},
            "open_now": self.open_now,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunStats:
        stats = cls(Counter(data["counters"]), Counter(data["errors"]))
        stats.histograms.update({k: Histogram.from_dict(h) for k, h in data["histograms"].items()})
        stats.open_now = int(data["open_now"])
        return stats

    @classmethod
    def merged(cls, parts: Iterable[RunStats]) -> RunStats:
        total = cls()
        for part in parts:
            total.merge(part)
        return total


def fmt_ms(value: float) -> str:
    if value != value:  # NaN
        return "-"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub Markdown table; numbers right-aligned."""
    rows = [[str(cell) for cell in row] for row in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"]
    lines.append(
        "|"
        + "|".join(
            ("-" * (w + 2)) if i == 0 else ("-" * (w + 1) + ":") for i, w in enumerate(widths)
        )
        + "|"
    )
    lines += [
        "| "
        + " | ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        + " |"
        for r in rows
    ]
    return "\n".join(lines)


def latency_table(stats: RunStats) -> str:
    """The latency histograms that have samples, as a Markdown table in ms."""
    rows = []
    for name in HISTOGRAMS:
        summary = stats.histograms[name].summary()
        if summary["count"]:
            cells = [fmt_ms(summary[k]) for k in ("p50", "p95", "p99", "max")]
            rows.append([name, summary["count"], *cells])
    return markdown_table(["latency (ms)", "n", "p50", "p95", "p99", "max"], rows)


def progress_line(elapsed: float, target: int, stats: RunStats) -> str:
    """One line of live progress: connections, acks, pushes, changes, errors."""
    c, h = stats.counters, stats.histograms
    return (
        f"t={elapsed:5.1f}s conns {stats.open_now}/{target} reconn {c['reconnects']}"
        f" err {sum(stats.errors.values())} | acks {c['acks']}"
        f" p99 {fmt_ms(h['ack'].percentile(99))}ms | pushes {c['deltas']}"
        f" p99 {fmt_ms(h['push'].percentile(99))}ms | changes {c['changes']}"
        f" polls {c['requests']}"
    )
