"""The guard under a tier table: each user's tier gives the LLM budget and the gate's caps.

The real ``anthropic`` SDK talks to the local fake API (tests/fakes/anthropic_api.py); the
ledger is the dict-backed one of tests/brain/test_analyst.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from brain.analyst import (
    AnalysisRequest,
    FallbackReason,
    GuardedAnalyst,
    TriggerCaps,
    TriggerGate,
    build_request,
)
from brain.analyst.claude import ClaudeAnalyst
from brain.model import Profile, State
from brain.scenarios import generate
from brain.tiers import DEFAULT_TIERS, FREE, PREMIUM, Tiers
from tests.brain.test_analyst import BASELINE, DAY0, MIN, MemoryLedger, Usage
from tests.fakes.anthropic_api import FakeAnthropicApi

NOW = DAY0 + 10 * 60 * MIN
DAY = "2023-11-15"
FREE_PROFILE = Profile()
PREMIUM_PROFILE = Profile(tier="premium")


def window(kind: str, profile: Profile, *, user: str = "ana", now_ms: int = NOW) -> AnalysisRequest:
    frames = generate(kind, start_ms=now_ms - 15 * MIN, minutes=15)
    return build_request(
        user, frames, now_ms=now_ms, profile=profile, baseline=BASELINE, previous=State.SLEEPING
    )


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
async def claude(api: FakeAnthropicApi) -> AsyncIterator[ClaudeAnalyst]:
    analyst = ClaudeAnalyst.direct(model="claude-haiku-4-5", api_key="test", base_url=api.base_url)
    yield analyst
    await analyst.aclose()


async def test_a_free_users_budget_is_spent_where_a_premium_users_is_not(
    claude: ClaudeAnalyst, api: FakeAnthropicApi
) -> None:
    ledger = MemoryLedger()
    spent = Usage(calls=5, cost_usd=FREE.llm_budget.cost_usd)
    ledger.days[("ana", DAY)] = spent
    ledger.days[("ben", DAY)] = spent
    limits: list[tuple[str, FallbackReason]] = []
    guard = GuardedAnalyst(
        claude,
        ledger=ledger,
        tiers=DEFAULT_TIERS,
        on_limit=lambda tier, reason: limits.append((tier, reason)),
    )

    free = await guard.decide(window("exercise", FREE_PROFILE, user="ana"))
    premium = await guard.decide(window("exercise", PREMIUM_PROFILE, user="ben"))

    assert (free.fallback, free.tier) == (FallbackReason.BUDGET, "free")
    assert (premium.fallback, premium.tier) == (None, "premium")
    assert api.calls == 1
    assert limits == [("free", FallbackReason.BUDGET)]


async def test_an_unknown_tier_is_held_to_the_default_tiers_budget(
    claude: ClaudeAnalyst, api: FakeAnthropicApi
) -> None:
    ledger = MemoryLedger()
    ledger.days[("ana", DAY)] = Usage(calls=5, cost_usd=FREE.llm_budget.cost_usd)
    guard = GuardedAnalyst(claude, ledger=ledger, tiers=DEFAULT_TIERS)

    decision = await guard.decide(window("exercise", Profile(tier="gold")))

    assert (decision.fallback, decision.tier) == (FallbackReason.BUDGET, "free")
    assert api.calls == 0


async def test_the_gate_caps_each_user_by_their_tier_and_names_the_cap(
    claude: ClaudeAnalyst, api: FakeAnthropicApi
) -> None:
    from dataclasses import replace

    tiers = Tiers(
        {
            "free": replace(FREE, llm_caps=TriggerCaps(per_hour=1, per_day=10)),
            "premium": replace(PREMIUM, llm_caps=TriggerCaps(per_hour=3, per_day=10)),
        }
    )
    guard = GuardedAnalyst(claude, gate=TriggerGate(), tiers=tiers)
    kinds = ["stress", "exercise", "stress", "exercise"]

    async def fallbacks(user: str, profile: Profile) -> list[FallbackReason | None]:
        return [
            (
                await guard.decide(window(kind, profile, user=user, now_ms=NOW + i * 5 * MIN))
            ).fallback
            for i, kind in enumerate(kinds)
        ]

    free = await fallbacks("ana", FREE_PROFILE)
    calls_for_free = api.calls + guard.stats.cache_hits
    premium = await fallbacks("ben", PREMIUM_PROFILE)

    assert calls_for_free == 1
    # Back in the situation of the one call, the LLM's answer stands (not a cap).
    capped, same = FallbackReason.CAPPED, FallbackReason.UNTRIGGERED
    assert free == [None, capped, same, capped]
    assert FallbackReason.CAPPED not in premium[:3]
    assert premium[3] is FallbackReason.CAPPED


async def test_the_cost_hook_hears_each_requests_llm_dollars_with_the_tier(
    claude: ClaudeAnalyst, api: FakeAnthropicApi
) -> None:
    heard: list[tuple[str, str | None, float]] = []
    guard = GuardedAnalyst(
        claude,
        ledger=MemoryLedger(),
        tiers=DEFAULT_TIERS,
        on_cost=lambda request, tier, usd: heard.append((request.user_id, tier, usd)),
    )

    await guard.decide(window("exercise", PREMIUM_PROFILE, user="ben"))

    assert [(user, tier) for user, tier, _ in heard] == [("ben", "premium")]
    assert heard[0][2] == pytest.approx(guard.stats.cost_usd)
    assert heard[0][2] > 0
