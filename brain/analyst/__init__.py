"""Analysts: who decides what a user's window of frames means.

- :mod:`brain.analyst.base`: :class:`AnalysisRequest`, the :class:`Analyst` and
  :class:`MeteredAnalyst` protocols, and the :class:`UsageLedger` protocol the store fills.
- :mod:`brain.analyst.rules`: :class:`RulesAnalyst`, the deterministic rules (always there).
- :mod:`brain.analyst.claude`: ``ClaudeAnalyst``, Claude through the ``anthropic`` SDK.
- :mod:`brain.analyst.guard`: :class:`GuardedAnalyst`, which puts a cache, a circuit
  breaker, a daily budget, timeouts and retries around an LLM and falls back to the rules.
- :mod:`brain.analyst.trigger`: :func:`should_trigger`, whether a window is worth an LLM call,
  and :class:`TriggerGate`, the per-user memory and caps it needs.
- :mod:`brain.analyst.errors`: the exception tree.

``ClaudeAnalyst`` is imported from its module, so importing this package does not load the
Anthropic SDK.
"""

from brain.analyst.base import (
    AnalysisRequest,
    Analyst,
    Answer,
    MeteredAnalyst,
    UsageLedger,
    UsageTotals,
    build_request,
    utc_day,
)
from brain.analyst.cache import ResponseCache, cache_key
from brain.analyst.circuit import CircuitBreaker, CircuitState
from brain.analyst.errors import AnalystError, AnalystTimeout, AnalystUnavailable, AnswerInvalid
from brain.analyst.guard import (
    DailyBudget,
    Decision,
    FallbackReason,
    GuardedAnalyst,
    GuardObserver,
    GuardStats,
)
from brain.analyst.rules import RulesAnalyst
from brain.analyst.trigger import (
    Situation,
    TriggerCaps,
    TriggerGate,
    TriggerMemory,
    TriggerReason,
    Verdict,
    should_trigger,
)

__all__ = [
    "AnalysisRequest",
    "Analyst",
    "AnalystError",
    "AnalystTimeout",
    "AnalystUnavailable",
    "Answer",
    "AnswerInvalid",
    "CircuitBreaker",
    "CircuitState",
    "DailyBudget",
    "Decision",
    "FallbackReason",
    "GuardObserver",
    "GuardStats",
    "GuardedAnalyst",
    "MeteredAnalyst",
    "ResponseCache",
    "RulesAnalyst",
    "Situation",
    "TriggerCaps",
    "TriggerGate",
    "TriggerMemory",
    "TriggerReason",
    "UsageLedger",
    "UsageTotals",
    "Verdict",
    "build_request",
    "cache_key",
    "should_trigger",
    "utc_day",
]
