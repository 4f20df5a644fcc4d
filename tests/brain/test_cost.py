"""CostPerUser: a user's day by service, its total, and when it is an anomaly for the tier."""

from __future__ import annotations

import pytest

from brain.cost import CostPerUser, Service
from brain.prices import PRICES, clips_cost, frames_cost, images_cost, pushes_cost
from brain.tiers import FREE, PREMIUM


def test_a_day_adds_up_by_service_and_in_total() -> None:
    day = CostPerUser("ana", "2026-12-01", "free")
    day = day.plus(Service.LLM, 0.01).plus(Service.IMAGES, 0.039).plus(Service.LLM, 0.02)

    assert day.by_service[Service.LLM] == pytest.approx(0.03)
    assert day.by_service[Service.IMAGES] == pytest.approx(0.039)
    assert day.by_service[Service.PUSHES] == 0.0
    assert day.total_usd == pytest.approx(0.069)
    assert set(day.to_dict()["by_service"]) == {s.value for s in Service}  # type: ignore[arg-type]


def test_a_day_over_its_tiers_allowance_is_an_anomaly_and_premium_allows_more() -> None:
    over_free = CostPerUser("ana", "2026-12-01", "free").plus(
        Service.IMAGES, FREE.day_cost_alert_usd + 0.01
    )
    assert over_free.anomalous(FREE)
    assert not over_free.anomalous(PREMIUM)
    assert not CostPerUser("ana", "2026-12-01", "free").anomalous(FREE)


def test_a_negative_cost_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        CostPerUser("ana", "2026-12-01", "free").plus(Service.LLM, -0.01)


def test_estimates_follow_the_dated_price_table() -> None:
    assert images_cost(2) == pytest.approx(2 * PRICES["image_per_generation"])
    assert clips_cost(1) > images_cost(1)
    # A day at 1 Hz (86,400 frames) sent a minute per upload, 60 to a write unit: 1,440 units.
    assert frames_cost(86_400) == pytest.approx(1_440 * PRICES["dynamodb_wru_per_million"] / 1e6)
    assert frames_cost(1) > 0
    assert pushes_cost(1_000) == pytest.approx(1_000 * 400 * PRICES["egress_per_gb"] / 1e9)
    assert PRICES["as_of"]
