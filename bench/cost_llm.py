"""The LLM side of bench.cost: a day's windows through brain, against the local fake API.

Each upload ends a window (the last 15 minutes of frames up to the upload's last frame);
the window goes through :class:`~brain.analyst.guard.GuardedAnalyst` with the real
``anthropic`` SDK pointed at :class:`tests.fakes.anthropic_api.FakeAnthropicApi`, on a
simulated clock. The fake answers
what the rules would (so the day's states are the rules' states, whoever answers). A
reactor as the pipeline's (a new version on a change of state, mood or energy band) keeps
the user's current state and counts the changes of state.

Modes: ``every_window`` is today's server with ``COMPANION_ANALYST=anthropic`` (every
analysis may reach Claude, within the daily budget); ``free`` and ``premium`` put
:func:`brain.analyst.trigger.should_trigger` in front with each tier's caps;
``free_cacheable`` is ``free`` with the fake (and the analyst's cache marks) caching
prefixes from 256 tokens, to show what prompt caching does once the static prefix is long
enough (Haiku 4.5 needs 4,096: in the other modes no mark is sent).
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from brain.analyst import DailyBudget, GuardedAnalyst, TriggerCaps, TriggerGate, build_request
from brain.analyst.claude import ClaudeAnalyst
from brain.model import EnergyBand, Frame, Profile, State
from brain.rules import assess
from brain.tiers import DEFAULT_TIERS
from tests.fakes.anthropic_api import FakeAnthropicApi

MODEL = "claude-haiku-4-5"
WINDOW_MS = 15 * 60_000

TIERS: dict[str, tuple[TriggerCaps, DailyBudget]] = {
    name: (tier.llm_caps, tier.llm_budget) for name, tier in DEFAULT_TIERS.items()
}
"""Caps and budget by tier: the server's built-in tiers (:mod:`brain.tiers`)."""


@dataclass
class _Ledger:
    """An in-memory usage ledger (the store's, without the store)."""

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

    async def add_usage(self, user_id: str, day: str, **usage: Any) -> _Ledger:
        self.calls += usage["calls"]
        self.input_tokens += usage["input_tokens"]
        self.output_tokens += usage["output_tokens"]
        self.cost_usd += usage["cost_usd"]
        return self

    async def get_usage(self, user_id: str, day: str) -> _Ledger:
        return self


async def llm_day(frames: Sequence[Frame], *, upload_ends: Sequence[int]) -> dict[str, Any]:
    """Calls, tokens and dollars of the day's windows in each mode (see the module doc);
    one window ends at each of ``upload_ends`` (ms, ascending)."""
    results: dict[str, Any] = {}
    with FakeAnthropicApi() as api:
        for mode in ("every_window", "free", "premium", "free_cacheable"):
            api.reset()
            if mode == "free_cacheable":
                api.cache_minimum_tokens = 256
            tier = "premium" if mode == "premium" else "free"
            caps, budget = TIERS[tier]
            gate = None if mode == "every_window" else TriggerGate(caps)
            results[mode] = await _one_day(
                api, frames, upload_ends, gate, budget, api.cache_minimum_tokens
            )
    return results


async def _one_day(
    api: FakeAnthropicApi,
    frames: Sequence[Frame],
    upload_ends: Sequence[int],
    gate: TriggerGate | None,
    budget: DailyBudget,
    cache_minimum_tokens: int | None,
) -> dict[str, Any]:
    stamps = [frame.ts for frame in frames]
    now = [stamps[0] / 1000]
    claude = ClaudeAnalyst.direct(
        model=MODEL,
        api_key="test",
        base_url=api.base_url,
        cache_minimum_tokens=cache_minimum_tokens,  # None: the model's (4,096 for Haiku 4.5)
    )
    guard = GuardedAnalyst(claude, ledger=_Ledger(), clock=lambda: now[0], gate=gate, budget=budget)
    profile = Profile()
    current: tuple[State, str, EnergyBand] | None = None
    changes = windows = 0
    outcomes: Counter[str] = Counter()
    try:
        for end in upload_ends:
            now[0] = end / 1000
            window = frames[
                bisect.bisect_left(stamps, end - WINDOW_MS) : bisect.bisect_left(stamps, end)
            ]
            previous = None if current is None else current[0]
            request = build_request(
                "cost-user", window, now_ms=end, profile=profile, previous=previous
            )
            rules = assess(request.features, profile, previous=previous)
            api.default_input = {
                "state": rules.state.value,
                "mood": rules.mood.value,
                "energy": rules.energy,
                "actions": [action.value for action in rules.actions],
                "reasoning": rules.reasoning or "Steady.",
            }
            decision = await guard.decide(request)
            windows += 1
            outcomes["cached" if decision.cached else (decision.fallback or "llm")] += 1
            found = decision.assessment
            seen = (found.state, found.mood.value, found.band)
            if seen != current:
                if current is not None and found.state != current[0]:
                    changes += 1
                current = seen
    finally:
        await claude.aclose()
    usages = api.usages
    return {
        "windows": windows,
        "calls": api.calls,
        "state_changes": changes,
        "outcomes": {str(key): value for key, value in outcomes.items()},
        "input_tokens": sum(u["input_tokens"] for u in usages),
        "output_tokens": sum(u["output_tokens"] for u in usages),
        "cache_write_tokens": sum(u["cache_creation_input_tokens"] for u in usages),
        "cache_read_tokens": sum(u["cache_read_input_tokens"] for u in usages),
        "cost_usd": guard.stats.cost_usd,
    }
