"""The fleet view, the node record and the error ring: pure functions, no event loop."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry

from brain.tiers import DEFAULT_TIERS
from server.cost import CostMeter
from server.metrics import Metrics
from server.ops.errors import ErrorEvent, ErrorRing, source_of
from server.ops.fleet import FleetWindow, Sample, bucket_gain, quantile
from server.ops.membership import Member
from server.ops.node import NodeRecord, broker_connected, figures, read_registry
from server.tiers import TierBook

INF = float("inf")


def record(node: str, t: float, *, started: float = 0.0, **counters: float) -> NodeRecord:
    return NodeRecord(
        node_id=node,
        name=f"{node}:8000",
        version="1.0",
        started_at=started,
        seen_at=t,
        connections={"phone": 2.0},
        counters=dict(counters),
    )


def test_quantile_interpolates_within_a_bucket_like_prometheus() -> None:
    buckets = [(0.01, 50.0), (0.05, 90.0), (0.1, 100.0), (INF, 100.0)]
    assert quantile(0.5, buckets) == pytest.approx(0.01)
    assert quantile(0.7, buckets) == pytest.approx(0.03)  # halfway through 0.01..0.05
    assert quantile(0.99, buckets) == pytest.approx(0.095)  # 9 of the 10 in 0.05..0.1
    assert quantile(0.5, [(0.01, 0.0), (INF, 0.0)]) is None
    assert quantile(0.99, [(0.01, 0.0), (INF, 10.0)]) == 0.01  # top bucket: its lower edge


def test_bucket_gain_is_the_difference_or_everything_after_a_restart() -> None:
    old = [(0.01, 5.0), (INF, 8.0)]
    new = [(0.01, 7.0), (INF, 12.0)]
    assert bucket_gain(new, old) == [(0.01, 2.0), (INF, 4.0)]
    assert bucket_gain(old, new) == old  # counts went down: the node restarted
    assert bucket_gain(new, None) == new


def test_rates_are_per_second_over_the_window_and_never_negative() -> None:
    window = FleetWindow()
    a0, b0 = record("a", 100.0, deltas_published=10), record("b", 100.0, deltas_published=50)
    window.add(Sample(100.0, (Member(a0, True), Member(b0, True)), True))
    # b restarted (new start time, counters from zero): it adds no rate in this window.
    a1 = record("a", 110.0, deltas_published=60)
    b1 = record("b", 110.0, started=105.0, deltas_published=3)
    window.add(Sample(110.0, (Member(a1, True), Member(b1, True)), True))
    view = window.view("a")
    assert view["rates"]["deltas_per_s"] == pytest.approx(5.0)
    assert view["totals"]["deltas_published"] == 63.0  # the sum of what both nodes export
    assert view["connections"] == {"phone": 4.0}
    assert view["nodes_up"] == 2


def test_a_node_that_joins_within_the_window_has_a_rate_from_its_first_reading() -> None:
    window = FleetWindow()
    window.add(Sample(100.0, (Member(record("a", 100.0), True),), True))
    for t, frames in ((101.0, 0), (103.0, 40)):
        joined = record("b", t, started=100.5, frames_accepted=frames)
        window.add(Sample(t, (Member(record("a", t), True), Member(joined, True)), True))
    assert window.view("a")["rates"]["frames_per_s"] == pytest.approx(20.0)


def test_a_node_whose_heartbeat_expired_is_down_and_left_out_of_the_totals() -> None:
    window = FleetWindow()
    up, gone = record("a", 200.0, frames_accepted=5), record("b", 190.0, frames_accepted=7)
    window.add(Sample(200.0, (Member(gone, False), Member(up, True)), True))
    view = window.view("a")
    assert [(n["name"], n["up"]) for n in view["nodes"]] == [("a:8000", True), ("b:8000", False)]
    assert view["nodes"][1]["last_seen_s"] == 10.0
    assert (view["nodes_up"], view["nodes_down"]) == (1, 1)
    assert view["totals"]["frames_accepted"] == 5.0
    assert view["connections"] == {"phone": 2.0}


def test_spend_is_by_tier_summed_over_the_nodes_and_per_hour_over_the_window() -> None:
    registry = CollectorRegistry()
    meter = CostMeter(registry, TierBook(DEFAULT_TIERS))
    meter.cost.labels("free", "llm").inc(0.02)
    meter.cost.labels("free", "images").inc(0.04)
    meter.cost.labels("premium", "llm").inc(0.5)
    spend = figures(read_registry(registry))["spend"]
    assert spend == pytest.approx({"free": 0.06, "premium": 0.5})

    window = FleetWindow()
    a0 = replace(record("a", 0.0), spend={"free": 0.06, "premium": 0.5})
    b0 = replace(record("b", 0.0), spend={"free": 1.0})
    window.add(Sample(0.0, (Member(a0, True), Member(b0, True)), True))
    a1 = replace(record("a", 36.0), spend={"free": 0.07, "premium": 0.6})
    b1 = replace(record("b", 36.0), spend={"free": 1.0})
    window.add(Sample(36.0, (Member(a1, True), Member(b1, True)), True))
    view = window.view("a")
    assert view["spend_by_tier"] == pytest.approx({"free": 1.07, "premium": 0.6})
    assert view["usd_per_h_by_tier"] == pytest.approx({"free": 1.0, "premium": 10.0})


def test_percentiles_come_from_the_buckets_gained_in_the_window() -> None:
    window = FleetWindow()
    old = record("a", 0.0)
    new = record("a", 10.0)
    early = {"push": [(0.001, 1000.0), (0.1, 1000.0), (INF, 1000.0)]}
    late = {"push": [(0.001, 1000.0), (0.1, 1100.0), (INF, 1100.0)]}
    window.add(Sample(0.0, (Member(replace(old, histograms=early), True),), True))
    window.add(Sample(10.0, (Member(replace(new, histograms=late), True),), True))
    push = window.view("a")["push_ms"]
    assert push["count"] == 100.0  # only the 100 new observations, all in 1..100 ms
    assert 1.0 < push["p50"] < 100.0


def test_a_record_survives_its_json_form_and_a_bad_one_is_refused() -> None:
    metrics = Metrics()
    metrics.connections.labels("watch").inc(3)
    metrics.push_latency.observe(0.004)
    metrics.avatar_cache.labels("hit").inc()
    parts = figures(read_registry(metrics.registry))
    original = NodeRecord(
        "n1",
        "host:1",
        "1.0",
        1.0,
        2.0,
        errors=(ErrorEvent(5, "error", "server.push", "E"),),
        **parts,
    )
    again = NodeRecord.from_json(original.to_json())
    assert again == original
    assert again.connections == {"watch": 3.0}
    assert again.counters["cache_hit"] == 1.0
    assert again.histograms["push"][-1] == (INF, 1.0)
    for bad in (b"[]", b'{"node_id": "x"}', b"not json"):
        with pytest.raises(ValueError):
            NodeRecord.from_json(bad)


def test_the_error_ring_keeps_kinds_never_messages_and_is_bounded() -> None:
    metrics = Metrics()
    ring = ErrorRing(metrics, clock=lambda: 1.5)
    logger = logging.getLogger("server.push.endpoint")
    logger.addHandler(ring)
    try:
        for _ in range(80):
            try:
                raise KeyError("user-secret-id")
            except KeyError:
                logger.exception("connection of %s failed", "user-secret-id")
        logger.warning("client said %s", "<script>")
    finally:
        logger.removeHandler(ring)
    events = ring.recent()
    assert len(events) == 50
    assert events[-1] == ErrorEvent(1500, "warning", "server.push", "")
    assert events[0] == ErrorEvent(1500, "error", "server.push", "KeyError")
    assert "user-secret-id" not in repr(events)
    rendered = metrics.render().decode()
    assert 'companion_errors_logged_total{level="error",source="server.push"} 80.0' in rendered


def test_sources_are_a_fixed_set() -> None:
    assert source_of("server.push.endpoint") == "server.push"
    assert source_of("brain.analyst.claude") == "brain.analyst"
    assert source_of("uvicorn.error") == "uvicorn"
    assert source_of("some.library.deep") == "other"


def test_broker_health_is_the_brokers_own_gauge_where_it_exports_one() -> None:
    from prometheus_client import CollectorRegistry, Gauge

    assert broker_connected(read_registry(Metrics().registry)) is None  # none: heartbeat decides
    registry = CollectorRegistry()
    gauge = Gauge("companion_broker_connected", "Broker connected.", registry=registry)
    assert broker_connected(read_registry(registry)) is False
    gauge.set(1)
    assert broker_connected(read_registry(registry)) is True
