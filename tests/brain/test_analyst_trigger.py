"""When a window reaches the LLM (brain.analyst.trigger), pure and through the guard.

The pure tests build windows from the scenarios and move ``now_ms`` by hand; the guard
tests run the real ``anthropic`` SDK against the local fake API, as tests/brain/test_analyst.py
does, and count the calls that arrive.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import pytest

from brain.analyst import (
    AnalysisRequest,
    FallbackReason,
    GuardedAnalyst,
    Situation,
    TriggerCaps,
    TriggerGate,
    TriggerMemory,
    TriggerReason,
    Verdict,
    build_request,
    should_trigger,
)
from brain.analyst.claude import ClaudeAnalyst
from brain.features import compute_baseline
from brain.model import Assessment, Mood, Profile, Source, State
from brain.rules import assess
from brain.scenarios import generate, history
from tests.fakes.anthropic_api import FakeAnthropicApi

MIN = 60_000
HOUR = 60 * MIN
DAY0 = 1_700_006_400_000  # 2023-11-15 00:00 UTC
NOW = DAY0 + 10 * HOUR
BASELINE = compute_baseline(history("healthy", end_ms=DAY0))
DEFAULT_CAPS = TriggerCaps()


def window(kind: str, now_ms: int = NOW, previous: State | None = None) -> AnalysisRequest:
    frames = generate(kind, start_ms=now_ms - 15 * MIN, minutes=15)
    return build_request(
        "ana", frames, now_ms=now_ms, profile=Profile(), baseline=BASELINE, previous=previous
    )


def candidate(req: AnalysisRequest) -> Assessment:
    return assess(req.features, req.profile, previous=req.previous)


def verdict_of(
    req: AnalysisRequest, memory: TriggerMemory, caps: TriggerCaps = DEFAULT_CAPS
) -> Verdict:
    return should_trigger(
        req.features,
        req.previous,
        candidate=candidate(req),
        memory=memory,
        now_ms=req.now_ms,
        caps=caps,
    )


def asked_about(req: AnalysisRequest) -> TriggerMemory:
    return TriggerMemory().asked(Situation.of(req.features, candidate(req)), req.now_ms)


# --- the pure decision ----------------------------------------------------------------------


def test_a_user_never_asked_about_is_asked_when_the_rules_disagree_with_the_state() -> None:
    req = window("exercise", previous=State.CALM)

    verdict = verdict_of(req, TriggerMemory())

    assert (verdict.ask, verdict.reason) == (True, TriggerReason.FIRST)


def test_a_user_whose_state_still_holds_costs_nothing_after_a_restart() -> None:
    req = window("exercise")
    req = replace(req, previous=candidate(req).state)

    verdict = verdict_of(req, TriggerMemory())

    assert (verdict.ask, verdict.reason) == (False, TriggerReason.SAME)


def test_the_same_situation_is_not_asked_again() -> None:
    first = window("calm")
    later = window("calm", NOW + 5 * MIN, previous=candidate(first).state)

    verdict = verdict_of(later, asked_about(first))

    assert (verdict.ask, verdict.reason) == (False, TriggerReason.SAME)


def test_a_candidate_change_of_state_is_asked() -> None:
    calm = window("calm")
    running = window("exercise", NOW + 20 * MIN, previous=candidate(calm).state)

    verdict = verdict_of(running, asked_about(calm))

    assert candidate(running).state is State.EXERCISING
    assert (verdict.ask, verdict.reason) == (True, TriggerReason.STATE_CHANGE)


def test_a_new_situation_in_the_same_state_is_asked_once_the_last_call_is_an_hour_old() -> None:
    calm = window("calm")
    memory = asked_about(calm)
    assert memory.situation is not None
    # Same candidate state, but the last call saw the user at another altitude band.
    moved = replace(memory, situation=replace(memory.situation, place=(7, 0, "snow", False)))
    soon = window("calm", NOW + 59 * MIN, previous=candidate(calm).state)
    later = window("calm", NOW + 60 * MIN, previous=candidate(calm).state)

    assert verdict_of(soon, moved).reason is TriggerReason.SAME
    verdict = verdict_of(later, moved)
    assert (verdict.ask, verdict.reason) == (True, TriggerReason.NEW_SITUATION)


def test_a_situation_unchanged_for_the_refresh_interval_is_asked_again() -> None:
    calm = window("calm")
    caps = TriggerCaps(refresh_after_ms=2 * HOUR)
    before = window("calm", NOW + 2 * HOUR - MIN, previous=candidate(calm).state)
    after = window("calm", NOW + 2 * HOUR, previous=candidate(calm).state)

    assert verdict_of(before, asked_about(calm), caps).reason is TriggerReason.SAME
    assert verdict_of(after, asked_about(calm), caps).reason is TriggerReason.REFRESH


def test_the_hourly_and_daily_caps_hold_even_for_changes_of_state() -> None:
    calm, running = window("calm"), window("exercise", NOW + 30 * MIN)
    situation = Situation.of(calm.features, candidate(calm))
    caps = TriggerCaps(per_hour=2, per_day=3)
    two_this_hour = TriggerMemory(situation, (NOW + 0, NOW + 10 * MIN), NOW + 10 * MIN)
    three_today = TriggerMemory(situation, (NOW - 5 * HOUR, NOW - 3 * HOUR, NOW), NOW)
    three_yesterday = TriggerMemory(situation, (NOW - 25 * HOUR,) * 3, NOW - 25 * HOUR)

    assert verdict_of(running, two_this_hour, caps).reason is TriggerReason.HOURLY_CAP
    assert verdict_of(running, three_today, caps).reason is TriggerReason.DAILY_CAP
    assert verdict_of(running, three_yesterday, caps).ask
    later = window("exercise", NOW + 71 * MIN)  # an hour after the two calls: room again
    assert verdict_of(later, two_this_hour, caps).ask


def test_an_empty_window_is_never_asked() -> None:
    empty = build_request("ana", [], now_ms=NOW, profile=Profile(), previous=State.CALM)

    assert verdict_of(empty, TriggerMemory()).reason is TriggerReason.NO_DATA


def test_memory_keeps_only_the_last_day_of_calls_and_the_last_answer() -> None:
    calm = window("calm")
    situation = Situation.of(calm.features, candidate(calm))
    answer = Assessment(State.CALM, Mood.HAPPY, 70, "fine", source=Source.LLM)
    memory = TriggerMemory().asked(situation, NOW - 25 * HOUR, answer)

    memory = memory.asked(situation, NOW, None)  # a failed call counts, the answer stays

    assert memory.calls_ms == (NOW,) and memory.answer == answer


def test_the_gate_forgets_the_least_recently_seen_users_past_its_bound() -> None:
    gate = TriggerGate(max_users=2)
    calm = window("calm")
    situation = Situation.of(calm.features, candidate(calm))
    for user in ("a", "b", "c"):
        gate.asked(user, situation, NOW, None)

    assert gate.memory("a") == TriggerMemory()
    assert gate.memory("c").situation == situation
    gate.forget("c")
    assert gate.memory("c") == TriggerMemory()


# --- through the guard, against the fake API ----------------------------------------------


@pytest.fixture(scope="module")
def api_server() -> Iterator[FakeAnthropicApi]:
    with FakeAnthropicApi() as fake:
        yield fake


@pytest.fixture
def api(api_server: FakeAnthropicApi) -> Iterator[FakeAnthropicApi]:
    api_server.reset()
    yield api_server
    api_server.release()


@pytest.fixture
async def guard(api: FakeAnthropicApi) -> AsyncIterator[GuardedAnalyst]:
    claude = ClaudeAnalyst.direct(model="claude-haiku-4-5", api_key="test", base_url=api.base_url)
    yield GuardedAnalyst(claude, gate=TriggerGate(TriggerCaps(per_hour=3, per_day=10)))
    await claude.aclose()


async def test_an_hour_of_windows_in_one_situation_costs_one_call(
    guard: GuardedAnalyst, api: FakeAnthropicApi
) -> None:
    api.answer({**api.default_input, "state": "resting", "mood": "sleepy", "energy": 40})
    decisions = [
        await guard.decide(window("calm", NOW + i * MIN, previous=State.STRESSED))
        for i in range(60)
    ]

    assert api.calls == 1
    assert decisions[0].fallback is None
    # The LLM's answer stands while nothing moves: the state does not flip back to the rules'.
    assert {d.assessment.state for d in decisions} == {State.RESTING}
    assert all(d.fallback is FallbackReason.UNTRIGGERED for d in decisions[1:])
    assert guard.stats.fallbacks[FallbackReason.UNTRIGGERED] == 59


async def test_a_change_of_state_reaches_the_llm_and_a_capped_one_still_goes_through(
    guard: GuardedAnalyst, api: FakeAnthropicApi
) -> None:
    kinds = ["calm", "exercise", "calm", "exercise", "calm"]
    decisions = [
        await guard.decide(window(kind, NOW + i * 5 * MIN, previous=State.SLEEPING))
        for i, kind in enumerate(kinds)
    ]

    # The cap of 3 an hour: calls, or answers from the guard's cache (the third window is
    # like the first), which count against the cap too.
    assert api.calls + guard.stats.cache_hits == 3 and api.calls >= 2
    assert [d.fallback for d in decisions[3:]] == [FallbackReason.UNTRIGGERED] * 2
    # Past the cap the rules answer a change, so it is not held back by the budget ...
    assert decisions[3].assessment == candidate(window("exercise", NOW + 15 * MIN, State.SLEEPING))
    assert decisions[3].assessment.source is Source.RULES
    # ... and back in the situation of the last call, the LLM's answer to it stands.
    assert decisions[4].assessment == decisions[2].assessment
    assert decisions[4].assessment.source is Source.LLM
