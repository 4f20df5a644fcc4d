"""The guard's parts without a network: circuit breaker, answer cache, prices, validation."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from brain.analyst import (
    AnalysisRequest,
    AnswerInvalid,
    CircuitBreaker,
    CircuitState,
    DailyBudget,
    ResponseCache,
    build_request,
    cache_key,
    utc_day,
)
from brain.analyst.claude import parse_assessment, user_message
from brain.analyst.persona import environment, persona, system_prompt
from brain.analyst.pricing import UNKNOWN, Price, price_of
from brain.model import Action, Assessment, CoachStyle, Env, Mood, Profile, Source, State
from brain.scenarios import generate

MIN = 60_000
NOW = 1_700_006_400_000 + 10 * 60 * MIN


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_closed_circuit_allows_calls_and_opens_after_the_threshold() -> None:
    clock = Clock()
    breaker = CircuitBreaker(clock=clock, failure_threshold=3, reset_after_s=10)
    for _ in range(2):
        assert breaker.allow()
        breaker.failure()
    assert breaker.state is CircuitState.CLOSED
    breaker.failure()
    assert breaker.state is CircuitState.OPEN
    assert not breaker.allow()


def test_a_success_resets_the_failure_count() -> None:
    breaker = CircuitBreaker(clock=Clock(), failure_threshold=2)
    breaker.failure()
    breaker.success()
    breaker.failure()
    assert breaker.state is CircuitState.CLOSED
    assert breaker.failures == 1


def test_a_half_open_circuit_lets_exactly_one_probe_through() -> None:
    clock = Clock()
    breaker = CircuitBreaker(clock=clock, failure_threshold=1, reset_after_s=10)
    breaker.failure()
    clock.now = 10
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.allow()
    assert not breaker.allow()
    breaker.success()
    assert breaker.state is CircuitState.CLOSED and breaker.allow()


def test_a_failed_probe_reopens_for_a_full_period_and_a_cancelled_one_frees_the_slot() -> None:
    clock = Clock()
    breaker = CircuitBreaker(clock=clock, failure_threshold=1, reset_after_s=10)
    breaker.failure()
    clock.now = 10
    assert breaker.allow()
    breaker.cancel()
    assert breaker.allow()  # the cancelled probe said nothing, so another may go
    breaker.failure()
    clock.now = 19
    assert breaker.state is CircuitState.OPEN
    clock.now = 20
    assert breaker.state is CircuitState.HALF_OPEN


@pytest.mark.parametrize(("threshold", "reset"), [(0, 1.0), (1, -1.0)])
def test_a_breaker_with_bad_settings_is_refused(threshold: int, reset: float) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(clock=Clock(), failure_threshold=threshold, reset_after_s=reset)


ANSWER = Assessment(State.CALM, Mood.HAPPY, 70, "Steady at 68 bpm.", (), Source.LLM)


def test_the_cache_returns_an_entry_until_its_ttl_passes() -> None:
    clock = Clock()
    cache = ResponseCache(clock=clock, ttl_s=60)
    cache.put("k", ANSWER)
    clock.now = 59.9
    assert cache.get("k") == ANSWER
    clock.now = 60
    assert cache.get("k") is None
    assert len(cache) == 0


def test_the_cache_drops_the_least_recently_used_past_its_size() -> None:
    cache = ResponseCache(clock=Clock(), max_entries=2)
    cache.put("a", ANSWER)
    cache.put("b", ANSWER)
    cache.get("a")
    cache.put("c", ANSWER)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (ANSWER, None, ANSWER)


def request(kind: str = "calm", profile: Profile | None = None) -> AnalysisRequest:
    frames = generate(kind, start_ms=NOW - 15 * MIN, minutes=15)
    return build_request("ana", frames, now_ms=NOW, profile=profile or Profile())


def test_the_cache_key_follows_rounded_features_persona_and_model() -> None:
    calm = request()
    assert cache_key(calm, "m") == cache_key(request(), "m")
    assert cache_key(calm, "m") == cache_key(replace(calm, user_id="ben"), "m")
    assert cache_key(calm, "m") != cache_key(calm, "other-model")
    assert cache_key(calm, "m") != cache_key(request("stress"), "m")
    strict = Profile(style=CoachStyle.STRICT)
    assert cache_key(calm, "m") != cache_key(request(profile=strict), "m")


@pytest.mark.parametrize(
    ("model", "price"),
    [
        ("claude-haiku-4-5", Price(1.0, 5.0)),
        ("claude-haiku-4-5-20251001", Price(1.0, 5.0)),
        ("eu.anthropic.claude-haiku-4-5-20251001-v1:0", Price(1.0, 5.0)),
        ("claude-sonnet-4-5", Price(3.0, 15.0)),
        ("claude-opus-4-5", Price(5.0, 25.0)),
        ("claude-opus-4-1", Price(15.0, 75.0)),
        ("some-new-model", UNKNOWN),
    ],
)
def test_a_model_is_priced_by_its_family(model: str, price: Price) -> None:
    assert price_of(model) == price


def test_a_call_costs_its_tokens_at_the_price_per_million() -> None:
    assert Price(1.0, 5.0).cost(1_000_000, 200_000) == pytest.approx(2.0)


@dataclass(frozen=True)
class Usage:
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


@pytest.mark.parametrize(
    ("usage", "spent"),
    [
        (Usage(9, 500, 499, 0.09), False),
        (Usage(10, 0, 0, 0.0), True),
        (Usage(0, 600, 400, 0.0), True),
        (Usage(0, 0, 0, 0.1), True),
    ],
    ids=["under", "calls", "tokens", "cost"],
)
def test_a_budget_is_spent_when_any_limit_is_reached(usage: Usage, spent: bool) -> None:
    assert DailyBudget(calls=10, tokens=1000, cost_usd=0.1).spent(usage) is spent


def test_the_ledger_day_is_the_utc_date() -> None:
    assert utc_day(1_700_006_400_000 - 1) == "2023-11-14"
    assert utc_day(1_700_006_400_000) == "2023-11-15"


def test_a_valid_tool_input_is_parsed_with_duplicate_actions_dropped() -> None:
    parsed = parse_assessment(
        {
            "state": "stressed",
            "mood": "anxious",
            "energy": 40,
            "actions": ["breathing_session", "breathing_session"],
            "reasoning": "  HR up 2 bpm/min while still.  ",
        }
    )
    assert parsed == Assessment(
        State.STRESSED, Mood.ANXIOUS, 40, "HR up 2 bpm/min while still.", (Action.BREATHING,),
        Source.LLM,
    )  # fmt: skip


def test_an_invalid_tool_input_names_the_field_and_the_allowed_values() -> None:
    with pytest.raises(AnswerInvalid, match="state must be one of calm, stressed"):
        parse_assessment({"state": 3, "mood": "happy", "energy": 1, "reasoning": "x"})


def test_the_persona_follows_style_tone_and_avatar() -> None:
    personas = {persona(Profile(style=s)) for s in CoachStyle}
    assert len(personas) == 3
    assert "an owl" in persona(Profile(base_avatar="owl"))
    assert "a fox" in persona(Profile(base_avatar="fox"))


def test_the_environment_prefers_the_latest_reading_and_falls_back_to_features() -> None:
    hike = request("hike")
    assert "altitude 1674 m (+174 m in the window)" in environment(hike)
    reading = replace(hike, env=Env(temp_c=3.0, weather="snow"))
    text = environment(reading)
    assert "3 °C" in text and "snow" in text and "altitude 1674 m" in text
    assert environment(hike) in system_prompt(hike)


def test_the_user_message_is_compact_json_without_nulls() -> None:
    message = user_message(request("calm"))
    assert "null" not in message
    assert message.startswith("Assess this window and call record_assessment.\n{")
