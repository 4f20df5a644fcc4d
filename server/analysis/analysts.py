"""Who assesses a window: the rules, or Claude behind a guard that falls back to them.

:func:`build_analyst` reads ``settings.analyst``; an LLM is always wrapped in a
:class:`~brain.analyst.guard.GuardedAnalyst` whose observer, :class:`PrometheusObserver`,
turns its calls, tokens, cache hits, fallbacks and circuit changes into metrics.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from brain.analyst.base import Analyst
from brain.analyst.circuit import CircuitState
from brain.analyst.guard import DailyBudget, FallbackReason, GuardedAnalyst
from brain.analyst.rules import RulesAnalyst
from brain.analyst.trigger import TriggerGate
from server.cost import CostMeter
from server.metrics import Metrics
from server.settings import Settings
from server.store.base import Store

Closer = Callable[[], Awaitable[None]]


class PrometheusObserver:
    """A :class:`~brain.analyst.guard.GuardObserver` that updates the server's metrics."""

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics

    def on_call(self, *, model: str, outcome: str, seconds: float) -> None:
        self._m.llm_calls.labels(model, outcome).inc()
        self._m.llm_call_seconds.observe(seconds)

    def on_usage(self, *, model: str, input_tokens: int, output_tokens: int, cost: float) -> None:
        self._m.llm_tokens.labels(model, "input").inc(input_tokens)
        self._m.llm_tokens.labels(model, "output").inc(output_tokens)
        self._m.llm_cost.labels(model).inc(cost)

    def on_cache(self, *, hit: bool) -> None:
        self._m.llm_cache.labels("hit" if hit else "miss").inc()

    def on_fallback(self, reason: FallbackReason) -> None:
        self._m.llm_fallbacks.labels(reason.value).inc()

    def on_circuit(self, state: CircuitState) -> None:
        for each in CircuitState:
            self._m.llm_circuit.labels(each.value).set(1 if each is state else 0)


def build_analyst(
    settings: Settings, ledger: Store, metrics: Metrics, cost: CostMeter | None = None
) -> tuple[Analyst, Closer | None]:
    """The analyst ``settings.analyst`` names, and what closes its client (``None``: nothing).

    An LLM is always wrapped in a :class:`GuardedAnalyst` whose fallback is the rules and
    whose ledger is the store, its limits the user's tier (budget, and the trigger gate's
    caps: Claude is asked only when a window is worth it, :mod:`brain.analyst.trigger`), its
    cost and limits reported to ``cost`` (today's cost per user, :mod:`server.cost`).
    """
    if settings.analyst == "rules":
        return RulesAnalyst(), None
    from brain.analyst.claude import ClaudeAnalyst  # loads the SDK only when configured

    if settings.analyst == "bedrock":
        claude = ClaudeAnalyst.bedrock(model=settings.bedrock_model)
    else:
        claude = ClaudeAnalyst.direct(model=settings.anthropic_model)
    guarded = GuardedAnalyst(
        claude,
        ledger=ledger,
        budget=DailyBudget(cost_usd=settings.llm_daily_budget_usd),
        observer=PrometheusObserver(metrics),
        gate=TriggerGate(),
        tiers=settings.tiers,
        on_cost=None if cost is None else cost.llm_hook,
        on_limit=None if cost is None else cost.llm_limited,
    )
    return guarded, claude.aclose
