"""The tier table: built-in free and premium, the COMPANION_TIERS parser, unknown names."""

from __future__ import annotations

import pytest

from brain.model import Profile
from brain.tiers import DEFAULT_TIERS, FREE, PREMIUM, parse_tiers, tier_of


def test_premium_is_entitled_to_more_than_free_on_every_limit() -> None:
    assert PREMIUM.llm_budget.cost_usd > FREE.llm_budget.cost_usd
    assert PREMIUM.llm_budget.calls > FREE.llm_budget.calls
    assert PREMIUM.llm_caps.per_hour > FREE.llm_caps.per_hour
    assert PREMIUM.llm_caps.per_day > FREE.llm_caps.per_day
    assert PREMIUM.debounce_ms < FREE.debounce_ms
    assert PREMIUM.avatar_generations_per_day > FREE.avatar_generations_per_day
    assert PREMIUM.rest_rate_per_s > FREE.rest_rate_per_s
    assert PREMIUM.ws_rate_per_s > FREE.ws_rate_per_s
    assert PREMIUM.day_cost_alert_usd > FREE.day_cost_alert_usd


def test_a_profile_is_free_by_default_and_an_unknown_tier_reads_as_free() -> None:
    assert tier_of(Profile()) is FREE
    assert tier_of(Profile(tier="premium")) is PREMIUM
    assert tier_of(Profile(tier="gold")) is FREE


def test_the_setting_changes_only_the_limits_it_names() -> None:
    tiers = parse_tiers(
        '{"premium": {"avatar_generations_per_day": 5, "llm_caps": {"per_hour": 2}}}'
    )
    assert tiers["premium"].avatar_generations_per_day == 5
    assert tiers["premium"].llm_caps.per_hour == 2
    assert tiers["premium"].llm_caps.per_day == PREMIUM.llm_caps.per_day
    assert tiers["premium"].debounce_ms == PREMIUM.debounce_ms
    assert tiers["free"] == FREE


def test_a_new_tier_starts_from_free() -> None:
    tiers = parse_tiers('{"family": {"rest_rate_per_s": 8}}')
    assert set(tiers) == {"free", "premium", "family"}
    assert tiers["family"].rest_rate_per_s == 8
    assert tiers["family"].avatar_generations_per_day == FREE.avatar_generations_per_day


def test_an_empty_setting_is_the_built_in_table() -> None:
    assert parse_tiers("") is DEFAULT_TIERS


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[1]", "object"),
        ("{", "JSON"),
        ('{"Gold!": {}}', "tier name"),
        ('{"free": {"frobs": 1}}', "frobs"),
        ('{"free": {"debounce_ms": "fast"}}', "debounce_ms"),
        ('{"free": {"debounce_ms": -1}}', "debounce_ms"),
        ('{"free": {"llm_caps": {"per_day": -1}}}', "llm_caps"),
        ('{"free": {"llm_budget": {"dollars": 1}}}', "llm_budget"),
        ('{"free": {"rest_rate_per_s": 0}}', "rates"),
    ],
)
def test_a_bad_setting_names_what_is_wrong(text: str, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        parse_tiers(text)


def test_the_number_of_tiers_is_bounded_so_metric_labels_are() -> None:
    many = "{" + ",".join(f'"t{i}": {{}}' for i in range(10)) + "}"
    with pytest.raises(ValueError, match="tiers"):
        parse_tiers(many)


def test_the_table_round_trips_through_its_json_shape() -> None:
    import json

    assert parse_tiers(json.dumps(DEFAULT_TIERS.to_dict())).to_dict() == DEFAULT_TIERS.to_dict()
