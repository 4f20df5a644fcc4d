"""Tier limits enforced on a live server: the REST rate limit per tier, the cost meter's
metrics and anomaly signal."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from brain.cost import Service
from brain.prices import frames_cost
from brain.tiers import parse_tiers
from server.cost import CostMeter
from server.settings import Settings
from server.store.sqlite import SQLiteStore
from server.tiers import TierBook
from tests.broker.conftest import eventually
from tests.conftest import SECRET, auth, start_server
from tests.server.conftest import frame, now_ms

TIGHT = parse_tiers(
    '{"free": {"rest_rate_per_s": 0.01, "rest_rate_burst": 2},'
    ' "premium": {"rest_rate_per_s": 0.01, "rest_rate_burst": 5}}'
)


def sample(live: object, name: str, labels: dict[str, str]) -> float:
    value = live.services.metrics.registry.get_sample_value(name, labels)  # type: ignore[attr-defined]
    return 0.0 if value is None else float(value)


async def test_each_user_gets_the_rest_rate_of_their_tier(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, secret=SECRET, tiers=TIGHT)
    async with start_server(settings) as live, live.http() as client:
        await client.put(
            "/v1/users/bob/tier", json={"tier": "premium"}, headers=auth("bob", "service")
        )
        free = [
            (await client.get("/v1/users/alice/state", headers=auth("alice"))).status_code
            for _ in range(4)
        ]
        premium = [
            (await client.get("/v1/users/bob/state", headers=auth("bob"))).status_code
            for _ in range(7)
        ]
        limited = sample(
            live, "companion_tier_limits_total", {"tier": "free", "limit": "rest_rate"}
        )
    assert free == [200, 200, 429, 429]
    assert premium == [200] * 5 + [429] * 2
    assert limited == 2


async def test_stored_frames_are_billed_to_the_users_tier_and_a_costly_day_is_one_anomaly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tiers = parse_tiers('{"free": {"day_cost_alert_usd": 0.0000001}}')
    settings = Settings(data_dir=tmp_path, secret=SECRET, tiers=tiers)
    start = now_ms() - 60_000
    async with start_server(settings) as live, live.http() as client:
        with caplog.at_level(logging.WARNING, logger="server.cost"):
            for batch in range(2):
                frames = [frame(start + (batch * 100 + i) * 100) for i in range(100)]
                answer = await client.post(
                    "/v1/users/alice/frames", json={"frames": frames}, headers=auth("alice")
                )
                assert answer.status_code == 200
        expected = 200 / 60 * 0.625 / 1e6  # 200 frames, 60 to a packed write unit
        storage = {"tier": "free", "service": "storage"}
        # The frames hook runs once the frames are durable, maybe after the answer.
        await eventually(
            lambda: sample(live, "companion_cost_usd_total", storage) >= expected * 0.999
        )
        billed = sample(live, "companion_cost_usd_total", storage)
        anomalies = sample(live, "companion_cost_anomalies_total", {"tier": "free"})
        premium_anomalies = sample(live, "companion_cost_anomalies_total", {"tier": "premium"})
        today = live.services.cost.today("alice")
        shown = (await client.get("/v1/users/alice/tier", headers=auth("alice"))).json()
    assert billed == pytest.approx(expected)
    assert today.by_service[Service.STORAGE] == pytest.approx(billed)
    # The route shows dollars to nine decimals.
    assert shown["cost_today"]["by_service"]["storage"] == pytest.approx(billed, abs=1e-9)
    assert (anomalies, premium_anomalies) == (1, 0)  # once per user and day
    warnings = [r.getMessage() for r in caplog.records if r.name == "server.cost"]
    assert len(warnings) == 1
    assert "free user" in warnings[0] and "alice" not in warnings[0]


async def test_service_costs_reach_the_usage_ledger_by_the_time_the_server_stops(
    settings: Settings,
) -> None:
    start = now_ms() - 60_000
    async with start_server(settings) as live, live.http() as client:
        frames = [frame(start + i * 100) for i in range(40)]
        answer = await client.post(
            "/v1/users/alice/frames", json={"frames": frames}, headers=auth("alice")
        )
        assert answer.status_code == 200
        await eventually(lambda: live.services.cost.today("alice").by_service[Service.STORAGE] > 0)
        day = live.services.cost.today("alice").day
    store = SQLiteStore(settings.sqlite_path)
    await store.open()
    try:
        usage = await store.get_usage("alice", day)
    finally:
        await store.close()
    assert usage.storage_usd == pytest.approx(frames_cost(40))
    assert usage.calls == 0  # no LLM here: the service costs have a row of their own


async def test_a_flush_the_store_refuses_keeps_its_sums_for_the_next(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry

    meter = CostMeter(CollectorRegistry(), TierBook())
    meter.add("alice", Service.IMAGES, 0.039)
    store = SQLiteStore(tmp_path / "costs.sqlite3")
    await store.open()
    await store.close()  # a closed store refuses every write
    assert await meter.flush(store) == 0
    await store.open()
    try:
        meter.add("alice", Service.IMAGES, 0.039)
        assert await meter.flush(store) == 1
        usage = await store.get_usage("alice", meter.today("alice").day)
    finally:
        await store.close()
    assert usage.images_usd == pytest.approx(0.078)


def test_the_guards_hooks_bill_the_llm_and_count_its_limits_by_tier() -> None:
    from prometheus_client import CollectorRegistry

    from brain.analyst import FallbackReason, build_request
    from brain.model import Profile

    registry = CollectorRegistry()
    meter = CostMeter(registry, TierBook())
    request = build_request("ben", [], now_ms=now_ms(), profile=Profile(tier="premium"))
    meter.llm_hook(request, "premium", 0.004)
    meter.llm_hook(request, None, 0.001)  # no tier table: the profile's tier
    meter.llm_limited("free", FallbackReason.BUDGET)
    meter.llm_limited("free", FallbackReason.CAPPED)

    def value(name: str, labels: dict[str, str]) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("companion_cost_usd_total", {"tier": "premium", "service": "llm"}) == (
        pytest.approx(0.005)
    )
    assert value("companion_tier_limits_total", {"tier": "free", "limit": "llm_budget"}) == 1
    assert value("companion_tier_limits_total", {"tier": "free", "limit": "llm_cap"}) == 1
    assert meter.today("ben").by_service[Service.LLM] == pytest.approx(0.005)
