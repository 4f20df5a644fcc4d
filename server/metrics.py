"""Prometheus metrics of one server process, on a registry of its own.

Each app gets its own :class:`Metrics` (and registry), so tests can run several apps in one
process and read exact counts. ``/metrics`` renders :attr:`Metrics.registry`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Final, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from server.protocol import REJECTION_FIELDS, Disconnects

OTHER: Final = "other"
"""The label value of everything outside a label's fixed set."""

HANDSHAKE_REJECT_REASONS: Final = frozenset(
    {
        "TokenMissing",
        "TokenInvalid",
        "TokenExpired",
        "Forbidden",
        "bad request",
        "not found",
        "timeout",
        "try later",
        "uri too long",
        "headers too large",
        "penalty",
    }
)
"""Why the edge refused a connection before it became a WebSocket (a fixed set)."""

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_SLOW_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_CLIP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 240.0, 480.0)
"""A local clip takes a fraction of a second, a Veo clip minutes."""


class FixedLabelCounter:
    """A counter with one label whose values come from a fixed set; any other value counts as
    :data:`OTHER`. Label values are never a client's strings: each one costs memory for the
    life of the process and a line in every ``/metrics`` scrape."""

    __slots__ = ("_allowed", "_counter")

    def __init__(self, counter: Counter, allowed: Iterable[str]) -> None:
        self._counter = counter
        self._allowed = frozenset(allowed)

    def labels(self, value: str) -> Counter:
        """The child counter of ``value``, or of :data:`OTHER` if ``value`` is not in the set."""
        return self._counter.labels(value if value in self._allowed else OTHER)


class Metrics:
    """The counters, gauges and histograms the server exports."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.connections = Gauge(
            "companion_connections", "Open WebSocket connections.", ["device"], registry=r
        )
        self.connections_opened = Counter(
            "companion_connections_opened",
            "WebSocket connections accepted.",
            ["device"],
            registry=r,
        )
        self.handshake_rejects = FixedLabelCounter(
            Counter(
                "companion_handshake_rejects",
                "Connections refused before a WebSocket was open (auth, timeout, limits).",
                ["reason"],
                registry=r,
            ),
            HANDSHAKE_REJECT_REASONS,
        )
        self.closes = FixedLabelCounter(
            Counter(
                "companion_closes",
                "WebSocket connections closed by the server, by named disconnect.",
                ["reason"],
                registry=r,
            ),
            (d.reason for d in Disconnects.all()),
        )
        self.frames_accepted = Counter(
            "companion_frames_accepted", "Frames stored.", ["path"], registry=r
        )
        self.frames_rejected = FixedLabelCounter(
            Counter(
                "companion_frames_rejected",
                "Frames rejected by validation, by field (unknown fields: other).",
                ["field"],
                registry=r,
            ),
            REJECTION_FIELDS,
        )
        self.frames_not_durable = Counter(
            "companion_frames_not_durable",
            "Frames the store could not write (not acked).",
            registry=r,
        )
        self.ingest_batch = Histogram(
            "companion_ingest_batch_rows",
            "Rows per store write.",
            buckets=(1, 5, 25, 100, 250, 500, 1000, 2500, 5000),
            registry=r,
        )
        self.ingest_seconds = Histogram(
            "companion_ingest_seconds",
            "Time of one store write.",
            buckets=_SLOW_BUCKETS,
            registry=r,
        )
        self.commits = Counter(
            "companion_state_commits", "State versions committed.", ["cause"], registry=r
        )
        self.commit_conflicts = Counter(
            "companion_state_conflicts", "Commits that lost a version race.", registry=r
        )
        self.state_reads = Counter(
            "companion_state_reads",
            "Reads of a user's current state, by where they were answered: cache (the"
            " process's current states) or store.",
            ["source"],
            registry=r,
        )
        self.history_events = Counter(
            "companion_history_events",
            "Decision-history writes, by outcome: recorded, skipped (recorded already, or the"
            " user was erased), failed (the store kept failing).",
            ["outcome"],
            registry=r,
        )
        self.deltas_published = Counter(
            "companion_deltas_published", "Deltas published to the broker.", registry=r
        )
        self.deltas_pushed = Counter(
            "companion_deltas_pushed",
            "Deltas handed to local subscribers (written, or queued behind).",
            registry=r,
        )
        self.push_latency = Histogram(
            "companion_push_latency_seconds",
            "Commit to the write of the delta: once per delta for the sockets written at "
            "once, once per delivery for a subscriber that was behind.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.outbox_drops = Counter(
            "companion_outbox_drops",
            "Messages merged away (coalesced) or refused by a full outbox.",
            ["kind"],
            registry=r,
        )
        self.penalties = FixedLabelCounter(
            Counter(
                "companion_penalties",
                "Addresses put in the penalty box, by the abuse close that tipped them.",
                ["reason"],
                registry=r,
            ),
            HANDSHAKE_REJECT_REASONS | {d.reason for d in Disconnects.all()},
        )
        self.penalty_box_addresses = Gauge(
            "companion_penalty_box_addresses",
            "Addresses whose new connections are refused now (the penalty box).",
            registry=r,
        )
        self.slow_peer_closes = Counter(
            "companion_slow_peer_closes", "Peers closed for not reading.", registry=r
        )
        self.longpolls = Gauge(
            "companion_longpolls_waiting", "REST long-polls waiting for a change.", registry=r
        )
        self.http_errors = Counter(
            "companion_http_errors", "Problem responses sent.", ["status"], registry=r
        )
        self.avatar_generations = Counter(
            "companion_avatar_generations",
            "Image generator calls, by result (ok, error).",
            ["result"],
            registry=r,
        )
        self.avatar_cache = Counter(
            "companion_avatar_cache",
            "Avatar cache lookups, by result (hit, miss, bypass: COMPANION_AVATAR_CACHE=off).",
            ["result"],
            registry=r,
        )
        self.avatar_failures = Counter(
            "companion_avatar_failures", "Avatar sagas that ended failed.", registry=r
        )
        self.avatar_generation_seconds = Histogram(
            "companion_avatar_generation_seconds",
            "Time of one successful image generation.",
            buckets=_SLOW_BUCKETS,
            registry=r,
        )
        self.avatar_waiting = Gauge(
            "companion_avatar_waiting", "Generations waiting for an avatar worker.", registry=r
        )
        self.avatar_clips = Counter(
            "companion_avatar_clips",
            "Clip maker calls, by result (ok, error).",
            ["result"],
            registry=r,
        )
        self.avatar_clip_failures = Counter(
            "companion_avatar_clip_failures",
            "Clips given up on (the image stays; video_status=failed).",
            registry=r,
        )
        self.avatar_clip_seconds = Histogram(
            "companion_avatar_clip_seconds",
            "Time of one successful clip (Veo: submit to done).",
            buckets=_CLIP_BUCKETS,
            registry=r,
        )
        # The analysis pipeline (server.analysis.scheduler, server.analysis.pipeline).
        self.analysis_queue = Gauge(
            "companion_analysis_queue",
            "Users waiting for an analysis (debouncing or queued for a worker).",
            registry=r,
        )
        self.analysis_running = Gauge(
            "companion_analysis_running", "Analyses running now.", registry=r
        )
        self.analysis_seconds = Histogram(
            "companion_analysis_seconds",
            "Time of one analysis: refill, assess and react.",
            buckets=_SLOW_BUCKETS,
            registry=r,
        )
        self.analyses = Counter(
            "companion_analyses", "Analyses finished, by who assessed.", ["source"], registry=r
        )
        self.analysis_coalesced = Counter(
            "companion_analysis_coalesced",
            "Schedules merged into an analysis already pending or running.",
            registry=r,
        )
        self.analysis_dropped = Counter(
            "companion_analysis_dropped",
            "Schedules refused (queue full or stopping).",
            ["reason"],
            registry=r,
        )
        self.analysis_errors = Counter(
            "companion_analysis_errors", "Analyses that raised.", registry=r
        )
        self.llm_calls = Counter(
            "companion_llm_calls", "LLM attempts, by outcome.", ["model", "outcome"], registry=r
        )
        self.llm_call_seconds = Histogram(
            "companion_llm_call_seconds",
            "Time of one LLM attempt.",
            buckets=_SLOW_BUCKETS,
            registry=r,
        )
        self.llm_tokens = Counter(
            "companion_llm_tokens", "LLM tokens billed.", ["model", "kind"], registry=r
        )
        self.llm_cost = Counter(
            "companion_llm_cost_usd", "LLM spend in US dollars.", ["model"], registry=r
        )
        self.llm_cache = Counter(
            "companion_llm_cache", "LLM answer cache lookups.", ["result"], registry=r
        )
        self.llm_fallbacks = Counter(
            "companion_llm_fallbacks", "Rules answers instead of the LLM.", ["reason"], registry=r
        )
        self.llm_circuit = Gauge(
            "companion_llm_circuit", "1 for the LLM circuit breaker's state.", ["state"], registry=r
        )

        # Health of the node and its cluster (server.ops): what the fleet page and the
        # alerts in deploy/prometheus read. Every label set is fixed by the code.
        self.ack_latency = Histogram(
            "companion_ack_latency_seconds",
            "Frames submitted to ingest until they are durable (the time an ack waits).",
            buckets=_SLOW_BUCKETS,
            registry=r,
        )
        self.store_errors = Counter(
            "companion_store_errors",
            "Store calls that failed (a lost version race is not an error), by operation.",
            ["operation"],
            registry=r,
        )
        self.store_seconds = Histogram(
            "companion_store_seconds",
            "Time of one store call, by operation (failures and lost races included): a "
            "commit's push latency holds its put_state.",
            ["operation"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.cluster_nodes = Gauge(
            "companion_cluster_nodes",
            "Nodes of the cluster as this node sees them (up: heartbeat alive; down: expired).",
            ["state"],
            registry=r,
        )
        self.cluster_heartbeats = Counter(
            "companion_cluster_heartbeats",
            "This node's membership heartbeats, by result (ok, error).",
            ["result"],
            registry=r,
        )
        self.cluster_heartbeat_age = Gauge(
            "companion_cluster_heartbeat_age_seconds",
            "Seconds since this node's last heartbeat reached the membership (Redis).",
            registry=r,
        )
        self.store_up = Gauge(
            "companion_store_up",
            "1 if the store answered this node's last health ping, else 0.",
            registry=r,
        )
        self.errors_logged = Counter(
            "companion_errors_logged",
            "Warnings and errors logged, by level and the part of the server that logged them.",
            ["level", "source"],
            registry=r,
        )
        self.devices_behind = Gauge(
            "companion_devices_behind",
            "Devices this node heard from whose last-seen version is more than one behind"
            " their user's newest, by kind (phone, watch, other).",
            ["kind"],
            registry=r,
        )
        self.command_results = Counter(
            "companion_command_results",
            "Outcomes of commands recorded (done, dismissed, expired).",
            ["outcome"],
            registry=r,
        )
        self.resident_memory = Gauge(
            "companion_resident_memory_bytes", "Resident memory (RSS) of this process.", registry=r
        )
        self.started = Gauge(
            "companion_start_time_seconds", "When this process started (epoch seconds).", registry=r
        )
        # Failures kept where they happen (the broker, the hub, the commit path, the hooks).
        self.peer_failures = Counter(
            "companion_peer_failures",
            "Local subscribers dropped because taking a message raised.",
            registry=r,
        )
        self.publish_failures = Counter(
            "companion_publish_failures",
            "Publishes the broker did not take, by kind (delta: repaired later; summary).",
            ["kind"],
            registry=r,
        )
        self.repairs = Counter(
            "companion_broker_repairs",
            "Current states sent to make up for lost messages, by kind (republish: a delta "
            "the broker did not take, to every node; resync: to local devices after a "
            "broker reconnect).",
            ["kind"],
            registry=r,
        )
        self.listener_failures = Counter(
            "companion_commit_listener_failures",
            "Commit listeners (avatar saga) that raised; the commit stands.",
            registry=r,
        )
        self.hook_failures = Counter(
            "companion_frames_hook_failures",
            "Frames hooks that raised, by hook; the other hooks still ran.",
            ["hook"],
            registry=r,
        )

    def track_broker(self, read: Callable[[], BrokerReading]) -> None:
        """Export the broker's health, read at each scrape: ``companion_broker_connected``,
        ``companion_broker_reconnects_total``, ``companion_broker_handler_errors_total`` and
        ``companion_broker_last_heard_age_seconds``. Call once per registry."""
        self.registry.register(_BrokerCollector(read))

    def render(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)


class BrokerReading(Protocol):
    """What :meth:`Metrics.track_broker` reads (``server.broker.base.BrokerHealth``)."""

    @property
    def connected(self) -> bool: ...
    @property
    def reconnects(self) -> int: ...
    @property
    def handler_errors(self) -> int: ...
    @property
    def last_heard_age_s(self) -> float | None: ...


class _BrokerCollector(Collector):
    """The broker's own counts and state, turned into samples when scraped."""

    def __init__(self, read: Callable[[], BrokerReading]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        health = self._read()
        yield GaugeMetricFamily(
            "companion_broker_connected",
            "1 while the broker is connected to its server (always 1 in memory).",
            value=1.0 if health.connected else 0.0,
        )
        yield CounterMetricFamily(
            "companion_broker_reconnects",
            "Times the broker connected again after losing its server.",
            value=health.reconnects,
        )
        yield CounterMetricFamily(
            "companion_broker_handler_errors",
            "Broker messages whose handler raised (delivery went on).",
            value=health.handler_errors,
        )
        age = GaugeMetricFamily(
            "companion_broker_last_heard_age_seconds",
            "Seconds since the broker last heard from its server (message or heartbeat).",
        )
        if health.last_heard_age_s is not None:
            age.add_metric([], health.last_heard_age_s)
        yield age
