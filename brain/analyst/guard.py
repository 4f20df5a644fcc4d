"""The guard around an LLM analyst: it always answers, within time, budget and reason.

:class:`GuardedAnalyst` asks a :class:`~brain.analyst.base.MeteredAnalyst` (Claude) and falls
back to the rules on any failure. In order, for each request:

0. with a :class:`~brain.analyst.trigger.TriggerGate`, whether the window is worth a call at
   all (:func:`~brain.analyst.trigger.should_trigger`); when it is not, the LLM's last answer
   stands while the rules see the same situation, and the rules answer otherwise;
1. the answer cache (:mod:`brain.analyst.cache`): a fresh answer for alike features and the
   same persona is reused without a call;
2. the circuit breaker (:mod:`brain.analyst.circuit`): while open, no call goes out;
3. the user's daily budget (calls, tokens, dollars) read from the :class:`UsageLedger`; an
   unreadable ledger counts as spent, because an unmetered LLM is the costlier mistake.
   With a tier table (:mod:`brain.tiers`), the user's tier, named in the request's profile,
   gives the budget and the gate's caps; a window worth a call past those caps falls back
   as ``capped``;
4. the call, each attempt under ``timeout_s``, retried under ``retry`` (the project's one
   :class:`~brain.backoff.Backoff`: full jitter, 3 attempts by default) when the failure
   may pass (timeouts, 429, 5xx, 529). An invalid answer is not retried: the same input
   would likely get the same answer, at full price;
5. the usage of every attempt is added to the ledger, priced by :mod:`brain.analyst.pricing`
   (prompt-cache writes and reads apart).

:meth:`GuardedAnalyst.decide` says which fallback reason applied; :attr:`GuardedAnalyst.stats`
counts calls, tokens, cost, cache hits and fallbacks by reason, and an optional
:class:`GuardObserver` hears the same events as they happen (the server turns them into
Prometheus metrics; brain stays free of metrics policy). Sleep, randomness and the clock
are injected, so tests run retries and circuit timeouts instantly.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Final, Protocol

from brain.analyst.base import (
    AnalysisRequest,
    Analyst,
    Answer,
    MeteredAnalyst,
    UsageLedger,
    UsageTotals,
    utc_day,
)
from brain.analyst.cache import ResponseCache, cache_key
from brain.analyst.circuit import CircuitBreaker, CircuitState
from brain.analyst.errors import AnalystTimeout, AnalystUnavailable, AnswerInvalid
from brain.analyst.pricing import PRICES, Price, price_of
from brain.analyst.rules import RulesAnalyst
from brain.analyst.trigger import Situation, TriggerGate, TriggerReason, Verdict
from brain.backoff import Backoff
from brain.model import Assessment

if TYPE_CHECKING:  # brain.tiers imports this module for DailyBudget
    from brain.tiers import Tier, Tiers

log = logging.getLogger(__name__)

RETRY = Backoff(attempts=3, base=0.5, cap=5.0)
"""Three calls at most: a fourth would push the answer past what a user waits for."""


class FallbackReason(StrEnum):
    """Why the rules answered instead of the LLM."""

    TIMEOUT = "timeout"
    ERROR = "error"
    INVALID = "invalid"
    CIRCUIT_OPEN = "circuit_open"
    BUDGET = "budget"
    LEDGER = "ledger"
    UNTRIGGERED = "untriggered"
    """The window was not worth a call (:mod:`brain.analyst.trigger`)."""
    CAPPED = "capped"
    """The window was worth a call, but the tier's calls per hour or day were used up."""


@dataclass(frozen=True, slots=True)
class DailyBudget:
    """What one user may spend on the LLM per UTC day; reaching any limit stops the calls."""

    calls: int = 300
    tokens: int = 400_000
    cost_usd: float = 0.50

    def spent(self, usage: UsageTotals) -> bool:
        """Whether ``usage`` has reached any of the limits."""
        return (
            usage.calls >= self.calls
            or usage.input_tokens + usage.output_tokens >= self.tokens
            or usage.cost_usd >= self.cost_usd
        )


@dataclass(slots=True)
class GuardStats:
    """Counters since start: read them when exporting metrics."""

    calls: int = 0
    """Requests sent to the LLM, retries included."""
    answers: int = 0
    """Valid LLM assessments received (cache hits not included)."""
    retries: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0
    cost_usd: float = 0.0
    cache_hits: int = 0
    cache_misses: int = 0
    fallbacks: dict[FallbackReason, int] = field(
        default_factory=lambda: dict.fromkeys(FallbackReason, 0)
    )


class GuardObserver(Protocol):
    """Hears what the guard does, as it happens (e.g. to update Prometheus metrics)."""

    def on_call(self, *, model: str, outcome: str, seconds: float) -> None:
        """One attempt ended: ``outcome`` is ``ok``, ``timeout``, ``error`` or ``invalid``."""

    def on_usage(self, *, model: str, input_tokens: int, output_tokens: int, cost: float) -> None:
        """An answer was billed."""

    def on_cache(self, *, hit: bool) -> None:
        """The cache was consulted."""

    def on_fallback(self, reason: FallbackReason) -> None:
        """The rules answered instead of the LLM."""

    def on_circuit(self, state: CircuitState) -> None:
        """The circuit breaker changed state."""


CostHook = Callable[[AnalysisRequest, "str | None", float], None]
"""Hears the dollars one request's LLM calls cost, with the user's tier (``None``: no tier
table): the server's live cost view per user and tier."""


LimitHook = Callable[[str, "FallbackReason"], None]
"""Hears a request that went over its tier's limit (``budget`` or ``capped``), with the tier's
name: the server counts it per tier."""

_TIER_LIMITS = frozenset({FallbackReason.BUDGET, FallbackReason.CAPPED})


RULES_MODEL: Final = "rules"
"""The :attr:`Decision.model` of an assessment the rules made."""


@dataclass(frozen=True, slots=True)
class Decision:
    """An assessment and how it was reached (``fallback`` is ``None`` for an LLM answer).

    ``model`` is who decided: the model id the API named (or the configured one, for an
    answer from the cache or the gate's memory of the LLM's last answer), else
    :data:`RULES_MODEL`. ``cost_usd`` is what this decision's calls cost, failed calls
    included (a timeout or an invalid answer is billed too, then the rules decide).
    """

    assessment: Assessment
    fallback: FallbackReason | None = None
    cached: bool = False
    tier: str | None = None
    """The tier whose limits applied (``None``: the guard has no tier table)."""
    model: str = RULES_MODEL
    cost_usd: float = 0.0


@dataclass(slots=True)
class _Attempts:
    answer: Answer | None = None
    reason: FallbackReason = FallbackReason.ERROR
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0
    cost_usd: float = 0.0


class GuardedAnalyst:
    """See the module docstring; an :class:`~brain.analyst.base.Analyst` that never raises
    (except :class:`asyncio.CancelledError`).

    ``clock`` returns monotonic seconds for the cache and the breaker; the ledger's day comes
    from the request's ``now_ms``. Raises :class:`ValueError` for a non-positive timeout.
    """

    def __init__(
        self,
        primary: MeteredAnalyst,
        *,
        fallback: Analyst | None = None,
        ledger: UsageLedger | None = None,
        clock: Callable[[], float] = time.monotonic,
        timeout_s: float = 10.0,
        retry: Backoff = RETRY,
        breaker: CircuitBreaker | None = None,
        cache: ResponseCache | None = None,
        budget: DailyBudget = DailyBudget(),  # frozen, so one default for all is safe
        prices: Mapping[str, Price] = PRICES,
        observer: GuardObserver | None = None,
        gate: TriggerGate | None = None,
        tiers: Tiers | None = None,
        on_cost: CostHook | None = None,
        on_limit: LimitHook | None = None,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.primary = primary
        self.fallback: Analyst = fallback if fallback is not None else RulesAnalyst()
        self.ledger = ledger
        self.timeout_s = timeout_s
        self.retry = retry
        self.budget = budget
        self.prices = prices
        self.breaker = breaker if breaker is not None else CircuitBreaker(clock=clock)
        self.cache = cache if cache is not None else ResponseCache(clock=clock)
        self.gate = gate
        self.tiers = tiers
        self._on_cost = on_cost
        self._on_limit = on_limit
        self.stats = GuardStats()
        self._clock = clock
        self._observer = observer
        self._circuit = self.breaker.state

    async def assess(self, request: AnalysisRequest) -> Assessment:
        """The LLM's assessment of ``request``, or the fallback's; see :meth:`decide`."""
        return (await self.decide(request)).assessment

    async def decide(self, request: AnalysisRequest, *, force: bool = False) -> Decision:
        """Assess ``request`` through gate, cache, circuit, budget and retries; say how it went.

        With a tier table, the user's tier (from the request's profile) gives the budget and
        the gate's caps; the decision names the tier. ``force`` (an analysis a person asked
        for) passes the gate; the budget, circuit and caps of the tier still hold.
        """
        tier = None if self.tiers is None else self.tiers.tier_of(request.profile)
        decision = await self._decide(request, tier, force=force)
        if tier is None:
            return decision
        if self._on_limit is not None and decision.fallback in _TIER_LIMITS:
            self._on_limit(tier.name, decision.fallback)
        return replace(decision, tier=tier.name)

    async def _decide(
        self, request: AnalysisRequest, tier: Tier | None, *, force: bool = False
    ) -> Decision:
        situation = None
        if self.gate is not None and not force:
            candidate = await self.fallback.assess(request)
            trigger = self.gate.check(
                request.user_id,
                request.features,
                request.previous,
                candidate,
                request.now_ms,
                caps=None if tier is None else tier.llm_caps,
            )
            if not trigger.ask:
                return self._untriggered(request, trigger, candidate)
            situation = trigger.situation
        key = cache_key(request, self.primary.model)
        cached = self.cache.get(key)
        self._count_cache(hit=cached is not None)
        if cached is not None:
            self._asked(request, situation, cached)
            return Decision(cached, cached=True, model=self.primary.model)
        if not self.breaker.allow():
            self._watch_circuit()
            return await self._fall_back(request, FallbackReason.CIRCUIT_OPEN)
        self._watch_circuit()
        verdict = False
        try:
            refused = await self._check_budget(
                request, self.budget if tier is None else tier.llm_budget
            )
            if refused is not None:
                return await self._fall_back(request, refused)
            attempts = await self._attempts(request)
            verdict = True
            if attempts.answer is not None:
                self.breaker.success()
            else:
                self.breaker.failure()
        finally:
            if not verdict:
                self.breaker.cancel()  # a probe that never ran says nothing about the LLM
            self._watch_circuit()
        await self._record_usage(request, attempts)
        if self._on_cost is not None and attempts.cost_usd > 0:
            self._on_cost(request, None if tier is None else tier.name, attempts.cost_usd)
        self._asked(
            request, situation, None if attempts.answer is None else attempts.answer.assessment
        )
        if attempts.answer is None:
            return await self._fall_back(request, attempts.reason, cost_usd=attempts.cost_usd)
        self.stats.answers += 1
        self.cache.put(key, attempts.answer.assessment)
        return Decision(
            attempts.answer.assessment, model=attempts.answer.model, cost_usd=attempts.cost_usd
        )

    async def _attempts(self, request: AnalysisRequest) -> _Attempts:
        """Call the primary as often as ``retry`` allows; never raises but cancellation."""
        result = _Attempts()
        attempt = 0
        while True:
            if attempt:
                self.stats.retries += 1
                await self.retry.wait(attempt - 1)
            result.calls += 1
            self.stats.calls += 1
            started = self._clock()
            retryable = True
            try:
                async with asyncio.timeout(self.timeout_s):
                    answer = await self.primary.answer(request)
            except (TimeoutError, AnalystTimeout):
                result.reason = FallbackReason.TIMEOUT
            except AnalystUnavailable as exc:
                result.reason, retryable = FallbackReason.ERROR, exc.retryable
                log.warning("LLM call for %s failed: %r", request.user_id, exc)
            except AnswerInvalid as exc:
                log.warning("LLM answer for %s is invalid: %s", request.user_id, exc)
                model = exc.model or self.primary.model
                self._bill(
                    result,
                    model,
                    exc.input_tokens,
                    exc.output_tokens,
                    exc.cache_write_tokens,
                    exc.cache_read_tokens,
                )
                self._observe_call(FallbackReason.INVALID, started)
                result.reason = FallbackReason.INVALID
                return result
            except Exception:  # a bug in an SDK or analyst must not cost the user an answer
                log.exception("LLM analyst raised unexpectedly for %s", request.user_id)
                result.reason, retryable = FallbackReason.ERROR, False
            else:
                self._bill(
                    result,
                    answer.model,
                    answer.input_tokens,
                    answer.output_tokens,
                    answer.cache_write_tokens,
                    answer.cache_read_tokens,
                )
                self._observe_call(None, started)
                result.answer = answer
                return result
            self._observe_call(result.reason, started)
            if not retryable or not self.retry.may_retry(attempt):
                return result
            attempt += 1

    async def _check_budget(
        self, request: AnalysisRequest, budget: DailyBudget
    ) -> FallbackReason | None:
        if self.ledger is None:
            return None
        try:
            usage = await self.ledger.get_usage(request.user_id, utc_day(request.now_ms))
        except Exception:  # fail closed: an unmetered LLM is the costlier mistake
            log.exception("cannot read the LLM usage of %s", request.user_id)
            return FallbackReason.LEDGER
        return FallbackReason.BUDGET if budget.spent(usage) else None

    def _bill(
        self,
        result: _Attempts,
        model: str,
        input_tokens: int,
        output_tokens: int,
        cache_write_tokens: int = 0,
        cache_read_tokens: int = 0,
    ) -> None:
        cost = price_of(model, self.prices).cost(
            input_tokens,
            output_tokens,
            cache_write_tokens=cache_write_tokens,
            cache_read_tokens=cache_read_tokens,
        )
        result.input_tokens += input_tokens
        result.output_tokens += output_tokens
        result.cache_write_tokens += cache_write_tokens
        result.cache_read_tokens += cache_read_tokens
        result.cost_usd += cost
        self.stats.input_tokens += input_tokens
        self.stats.output_tokens += output_tokens
        self.stats.cache_write_tokens += cache_write_tokens
        self.stats.cache_read_tokens += cache_read_tokens
        self.stats.cost_usd += cost
        if self._observer is not None:
            self._observer.on_usage(
                model=model, input_tokens=input_tokens, output_tokens=output_tokens, cost=cost
            )

    async def _record_usage(self, request: AnalysisRequest, result: _Attempts) -> None:
        if self.ledger is None or result.calls == 0:
            return
        try:
            await self.ledger.add_usage(
                request.user_id,
                utc_day(request.now_ms),
                calls=result.calls,
                input_tokens=result.input_tokens,
                output_tokens=result.output_tokens,
                cost_usd=result.cost_usd,
                cache_write_tokens=result.cache_write_tokens,
                cache_read_tokens=result.cache_read_tokens,
            )
        except Exception:  # the answer is still good; the next budget check may be lenient
            log.exception("cannot record the LLM usage of %s", request.user_id)

    def _untriggered(
        self, request: AnalysisRequest, verdict: Verdict, candidate: Assessment
    ) -> Decision:
        """The answer to a window not worth a call: the LLM's last answer while the rules
        see the situation it answered, else the rules' own (a capped change goes through)."""
        assert self.gate is not None
        capped = verdict.reason in (TriggerReason.HOURLY_CAP, TriggerReason.DAILY_CAP)
        reason = FallbackReason.CAPPED if capped else FallbackReason.UNTRIGGERED
        self.stats.fallbacks[reason] += 1
        if self._observer is not None:
            self._observer.on_fallback(reason)
        last = self.gate.memory(request.user_id).answer
        if verdict.reason is TriggerReason.SAME and last is not None:
            return Decision(last, fallback=reason, model=self.primary.model)
        return Decision(candidate, fallback=reason)

    def _asked(
        self, request: AnalysisRequest, situation: Situation | None, answer: Assessment | None
    ) -> None:
        if self.gate is not None and situation is not None:
            self.gate.asked(request.user_id, situation, request.now_ms, answer)

    async def _fall_back(
        self, request: AnalysisRequest, reason: FallbackReason, *, cost_usd: float = 0.0
    ) -> Decision:
        self.stats.fallbacks[reason] += 1
        if self._observer is not None:
            self._observer.on_fallback(reason)
        log.info("rules answer for %s: %s", request.user_id, reason.value)
        assessment = await self.fallback.assess(request)
        return Decision(assessment, fallback=reason, cost_usd=cost_usd)

    def _count_cache(self, *, hit: bool) -> None:
        if hit:
            self.stats.cache_hits += 1
        else:
            self.stats.cache_misses += 1
        if self._observer is not None:
            self._observer.on_cache(hit=hit)

    def _observe_call(self, failure: FallbackReason | None, started: float) -> None:
        if self._observer is not None:
            outcome = "ok" if failure is None else failure.value
            self._observer.on_call(
                model=self.primary.model, outcome=outcome, seconds=self._clock() - started
            )

    def _watch_circuit(self) -> None:
        state = self.breaker.state
        if state is not self._circuit:
            self._circuit = state
            if self._observer is not None:
                self._observer.on_circuit(state)
