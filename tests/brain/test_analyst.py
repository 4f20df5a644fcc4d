"""The LLM analyst with the real ``anthropic`` SDK against a local fake API, and its guard.

Time is a manual clock, retry sleeps are recorded instead of slept, and the usage ledger is
an in-memory class below. Only the timeout test waits, on ``asyncio.timeout`` itself.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from typing import Any

import orjson
import pytest
from anthropic import AsyncAnthropicBedrock

from brain.analyst import (
    AnalysisRequest,
    CircuitBreaker,
    CircuitState,
    DailyBudget,
    FallbackReason,
    GuardedAnalyst,
    ResponseCache,
    RulesAnalyst,
    UsageLedger,
    build_request,
)
from brain.analyst.claude import (
    BEDROCK_REGION,
    CHARS_PER_TOKEN,
    TOOL_NAME,
    ClaudeAnalyst,
    cache_marks,
)
from brain.analyst.guard import RETRY
from brain.analyst.persona import persona
from brain.analyst.pricing import cache_minimum_of, price_of
from brain.backoff import Backoff
from brain.features import compute_baseline
from brain.model import (
    Action,
    Assessment,
    CoachStyle,
    CoachTone,
    Mood,
    Profile,
    Source,
    State,
)
from brain.rules import assess as rules_assess
from brain.scenarios import generate, history
from tests.fakes.anthropic_api import DEFAULT_INPUT, FakeAnthropicApi

MIN = 60_000
DAY0 = 1_700_006_400_000  # 2023-11-15 00:00 UTC
NOW = DAY0 + 10 * 60 * MIN + 15 * MIN
MODEL = "claude-haiku-4-5"
BASELINE = compute_baseline(history("healthy", end_ms=DAY0))
STRICT = Profile(style=CoachStyle.STRICT, tone=CoachTone.DIRECT, base_avatar="fox")
KIND = Profile(style=CoachStyle.ENCOURAGING, tone=CoachTone.GENTLE, base_avatar="owl")

LLM_ANSWER: dict[str, Any] = {
    "state": "exercising",
    "mood": "energized",
    "energy": 58,
    "actions": ["keep_going", "hydrate"],
    "reasoning": "150 steps/min with HR at 121 bpm: a solid run. Hold the pace and drink.",
}


class ManualClock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass(frozen=True)
class Usage:
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0


class MemoryLedger:
    """A :class:`UsageLedger` in a dict, keyed by (user, day)."""

    def __init__(self) -> None:
        self.days: dict[tuple[str, str], Usage] = {}

    async def add_usage(
        self,
        user_id: str,
        day: str,
        *,
        calls: int,
        input_tokens: int,
        output_tokens: int,
        cost_usd: float,
        cache_write_tokens: int = 0,
        cache_read_tokens: int = 0,
    ) -> Usage:
        old = self.days.get((user_id, day), Usage())
        new = Usage(
            old.calls + calls,
            old.input_tokens + input_tokens,
            old.output_tokens + output_tokens,
            old.cost_usd + cost_usd,
            old.cache_write_tokens + cache_write_tokens,
            old.cache_read_tokens + cache_read_tokens,
        )
        self.days[(user_id, day)] = new
        return new

    async def get_usage(self, user_id: str, day: str) -> Usage:
        return self.days.get((user_id, day), Usage())


class BrokenLedger(MemoryLedger):
    async def get_usage(self, user_id: str, day: str) -> Usage:
        raise ConnectionError("the usage table is unreachable")


class Recorder:
    """A guard observer that writes down what it hears."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def on_call(self, *, model: str, outcome: str, seconds: float) -> None:
        self.events.append(("call", outcome))

    def on_usage(self, *, model: str, input_tokens: int, output_tokens: int, cost: float) -> None:
        self.events.append(("usage", input_tokens + output_tokens))

    def on_cache(self, *, hit: bool) -> None:
        self.events.append(("cache", hit))

    def on_fallback(self, reason: FallbackReason) -> None:
        self.events.append(("fallback", reason))

    def on_circuit(self, state: CircuitState) -> None:
        self.events.append(("circuit", state))


@pytest.fixture(scope="module")
def api_server() -> Iterator[FakeAnthropicApi]:
    with FakeAnthropicApi() as fake:
        yield fake


@pytest.fixture
def api(api_server: FakeAnthropicApi) -> Iterator[FakeAnthropicApi]:
    """The module's fake API with a clean script and record for each test."""
    api_server.reset()
    yield api_server
    api_server.release()


@pytest.fixture
async def claude(api: FakeAnthropicApi) -> AsyncIterator[ClaudeAnalyst]:
    analyst = ClaudeAnalyst.direct(model=MODEL, api_key="test", base_url=api.base_url)
    yield analyst
    await analyst.aclose()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def ledger() -> MemoryLedger:
    return MemoryLedger()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def guard(
    claude: ClaudeAnalyst, clock: ManualClock, ledger: MemoryLedger, sleeps: list[float]
) -> GuardedAnalyst:
    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    return GuardedAnalyst(
        claude,
        ledger=ledger,
        clock=clock,
        retry=replace(RETRY, sleep=sleep, random=lambda: 0.5),
        breaker=CircuitBreaker(clock=clock, failure_threshold=3, reset_after_s=30),
    )


def request(
    kind: str = "exercise", profile: Profile = STRICT, user: str = "ana"
) -> AnalysisRequest:
    frames = generate(kind, start_ms=NOW - 15 * MIN, minutes=15)
    return build_request(user, frames, now_ms=NOW, profile=profile, baseline=BASELINE)


def rules_answer(req: AnalysisRequest) -> Assessment:
    return rules_assess(req.features, req.profile, previous=req.previous)


async def test_the_persona_reaches_the_system_prompt_and_follows_the_profile(
    guard: GuardedAnalyst, api: FakeAnthropicApi
) -> None:
    await guard.decide(request(profile=STRICT))
    await guard.decide(request(profile=KIND))
    strict, kind = (r.system for r in api.requests)
    assert persona(STRICT) in strict and "strict coach" in strict and "a fox" in strict
    assert persona(KIND) in kind and "encouraging coach" in kind and "an owl" in kind
    assert persona(STRICT) not in kind


async def test_the_environment_reaches_the_system_prompt(
    guard: GuardedAnalyst, api: FakeAnthropicApi
) -> None:
    req = request("hike")
    await guard.decide(req)
    system = api.requests[0].system
    assert f"altitude {req.features.altitude_m:.0f} m" in system
    assert "local time 10:00" in system
    assert "clear" in system and "moving at 1.1 m/s" in system


async def test_the_call_forces_the_tool_whose_enums_come_from_the_model(
    guard: GuardedAnalyst, api: FakeAnthropicApi
) -> None:
    req = request()
    await guard.decide(req)
    sent = api.requests[0]
    assert sent.api_key == "test"
    assert sent.body["model"] == MODEL
    assert sent.body["tool_choice"] == {"type": "tool", "name": TOOL_NAME}
    schema = sent.body["tools"][0]["input_schema"]
    assert schema["properties"]["state"]["enum"] == [s.value for s in State]
    assert schema["properties"]["mood"]["enum"] == [m.value for m in Mood]
    assert schema["properties"]["actions"]["items"]["enum"] == [a.value for a in Action]
    assert schema["properties"]["energy"] == {"type": "integer", "minimum": 0, "maximum": 100}
    numbers = json.loads(sent.user_text.split("\n", 1)[1])
    assert numbers["features"]["hr_mean"] == round(req.features.hr_mean or 0, 2)
    assert numbers["baseline"]["hrv"] == round(BASELINE.hrv or 0, 2)
    assert len(numbers["trend_per_minute"]) == 15


async def test_a_tool_use_answer_becomes_an_llm_assessment(
    guard: GuardedAnalyst, api: FakeAnthropicApi
) -> None:
    api.answer(LLM_ANSWER)
    decision = await guard.decide(request())
    assert decision.fallback is None and not decision.cached
    assert decision.assessment == Assessment(
        state=State.EXERCISING,
        mood=Mood.ENERGIZED,
        energy=58,
        reasoning=LLM_ANSWER["reasoning"],
        actions=(Action.KEEP_GOING, Action.HYDRATE),
        source=Source.LLM,
    )
    assert guard.stats.answers == 1 and guard.stats.calls == 1


MALFORMED = {
    "state outside the enum": {**DEFAULT_INPUT, "state": "panicking"},
    "mood missing": {k: v for k, v in DEFAULT_INPUT.items() if k != "mood"},
    "energy above 100": {**DEFAULT_INPUT, "energy": 101},
    "energy as a word": {**DEFAULT_INPUT, "energy": "high"},
    "energy as a fraction": {**DEFAULT_INPUT, "energy": 55.5},
    "energy as a boolean": {**DEFAULT_INPUT, "energy": True},
    "unknown action": {**DEFAULT_INPUT, "actions": ["juggle"]},
    "four actions": {**DEFAULT_INPUT, "actions": ["rest", "hydrate", "move", "wind_down"]},
    "empty reasoning": {**DEFAULT_INPUT, "reasoning": "  "},
    "reasoning over 300 characters": {**DEFAULT_INPUT, "reasoning": "x" * 301},
    "input not an object": ["calm", "happy"],
}


@pytest.mark.parametrize("tool_input", MALFORMED.values(), ids=MALFORMED.keys())
async def test_a_malformed_answer_falls_back_to_rules_as_invalid_without_retry(
    guard: GuardedAnalyst, api: FakeAnthropicApi, ledger: MemoryLedger, tool_input: object
) -> None:
    api.answer(tool_input)
    req = request()
    decision = await guard.decide(req)
    assert decision.fallback is FallbackReason.INVALID
    assert decision.assessment == rules_answer(req)
    assert decision.assessment.source is Source.RULES
    assert api.calls == 1
    assert guard.stats.fallbacks[FallbackReason.INVALID] == 1
    billed = ledger.days[("ana", "2023-11-15")]  # the invalid answer still cost tokens
    assert billed.input_tokens == api.usages[0]["input_tokens"]


async def test_a_text_answer_instead_of_the_tool_falls_back_as_invalid(
    guard: GuardedAnalyst, api: FakeAnthropicApi
) -> None:
    api.answer_text("The user seems fine.")
    decision = await guard.decide(request())
    assert decision.fallback is FallbackReason.INVALID
    assert decision.assessment.source is Source.RULES


async def test_server_errors_are_retried_with_jittered_backoff_then_fall_back(
    guard: GuardedAnalyst, api: FakeAnthropicApi, sleeps: list[float], ledger: MemoryLedger
) -> None:
    api.fail(500, times=3)
    req = request()
    decision = await guard.decide(req)
    assert decision.fallback is FallbackReason.ERROR
    assert decision.assessment == rules_answer(req)
    assert api.calls == 3
    assert sleeps == [0.25, 0.5]  # full jitter: half of 0.5 s, then of 1 s, for random() = 0.5
    assert guard.stats.retries == 2
    assert ledger.days[("ana", "2023-11-15")].calls == 3


async def test_an_overloaded_api_is_retried_and_the_retry_answers(
    guard: GuardedAnalyst, api: FakeAnthropicApi
) -> None:
    api.fail(529)
    decision = await guard.decide(request())
    assert decision.fallback is None
    assert decision.assessment.source is Source.LLM
    assert api.calls == 2


async def test_a_bad_request_is_not_retried(guard: GuardedAnalyst, api: FakeAnthropicApi) -> None:
    api.fail(400, times=3)
    decision = await guard.decide(request())
    assert decision.fallback is FallbackReason.ERROR
    assert api.calls == 1


async def test_a_hanging_api_times_out_and_falls_back(
    claude: ClaudeAnalyst, api: FakeAnthropicApi, clock: ManualClock
) -> None:
    api.hang()
    guard = GuardedAnalyst(claude, clock=clock, timeout_s=0.2, retry=Backoff(attempts=1))
    req = request()
    decision = await guard.decide(req)
    assert api.hung.is_set()
    assert decision.fallback is FallbackReason.TIMEOUT
    assert decision.assessment == rules_answer(req)
    assert guard.stats.fallbacks[FallbackReason.TIMEOUT] == 1


async def test_a_spent_budget_falls_back_without_calling(
    guard: GuardedAnalyst, api: FakeAnthropicApi, ledger: MemoryLedger
) -> None:
    ledger.days[("ana", "2023-11-15")] = Usage(calls=10, cost_usd=guard.budget.cost_usd)
    decision = await guard.decide(request())
    assert decision.fallback is FallbackReason.BUDGET
    assert decision.assessment.source is Source.RULES
    assert api.calls == 0
    other_user = await guard.decide(request(user="ben"))  # budgets are per user
    assert other_user.fallback is None


@pytest.mark.parametrize(
    "budget",
    [DailyBudget(calls=1), DailyBudget(tokens=1), DailyBudget(cost_usd=1e-9)],
    ids=["calls", "tokens", "cost"],
)
async def test_any_spent_limit_stops_the_next_call(
    claude: ClaudeAnalyst, api: FakeAnthropicApi, clock: ManualClock, budget: DailyBudget
) -> None:
    guard = GuardedAnalyst(claude, ledger=MemoryLedger(), clock=clock, budget=budget)
    assert (await guard.decide(request("exercise"))).fallback is None
    assert (await guard.decide(request("stress"))).fallback is FallbackReason.BUDGET
    assert api.calls == 1


async def test_an_unreadable_ledger_counts_as_a_spent_budget(
    claude: ClaudeAnalyst, api: FakeAnthropicApi, clock: ManualClock
) -> None:
    guard = GuardedAnalyst(claude, ledger=BrokenLedger(), clock=clock)
    decision = await guard.decide(request())
    assert decision.fallback is FallbackReason.LEDGER
    assert api.calls == 0


async def test_usage_is_recorded_per_user_and_day_with_its_cost(
    guard: GuardedAnalyst, api: FakeAnthropicApi, ledger: MemoryLedger
) -> None:
    await guard.decide(request())
    usage = api.usages[0]
    cost = price_of(MODEL).cost(usage["input_tokens"], usage["output_tokens"])
    assert ledger.days == {
        ("ana", "2023-11-15"): Usage(1, usage["input_tokens"], usage["output_tokens"], cost)
    }
    assert (guard.stats.input_tokens, guard.stats.output_tokens) == (
        usage["input_tokens"],
        usage["output_tokens"],
    )
    assert guard.stats.cost_usd == pytest.approx(cost)


async def test_a_repeat_input_is_served_from_the_cache(
    guard: GuardedAnalyst, api: FakeAnthropicApi
) -> None:
    api.answer(LLM_ANSWER)
    first = await guard.decide(request())
    again = await guard.decide(request(user="ben"))  # same rounded features and persona
    assert api.calls == 1
    assert again.cached and again.assessment == first.assessment
    assert guard.stats.cache_hits == 1
    await guard.decide(request(profile=KIND))  # another persona is another answer
    assert api.calls == 2


async def test_a_decision_names_the_model_and_what_its_calls_cost(
    guard: GuardedAnalyst, api: FakeAnthropicApi, ledger: MemoryLedger
) -> None:
    """An answer: the model the API named and its cost; the same answer from the cache: the
    model, nothing spent; an invalid answer: the rules decided, but its call was billed."""
    api.answer(LLM_ANSWER)
    answered = await guard.decide(request())
    cached = await guard.decide(request(user="ben"))
    billed = ledger.days[("ana", "2023-11-15")].cost_usd
    api.answer({"state": "bored"})
    invalid = await guard.decide(request(profile=KIND))
    assert answered.model.startswith(MODEL)
    assert answered.cost_usd == pytest.approx(billed) and billed > 0
    assert (cached.model, cached.cost_usd) == (guard.primary.model, 0.0)
    assert (invalid.model, invalid.fallback) == ("rules", FallbackReason.INVALID)
    assert invalid.cost_usd > 0


async def test_a_cached_answer_expires_after_its_ttl(
    claude: ClaudeAnalyst, api: FakeAnthropicApi, clock: ManualClock
) -> None:
    guard = GuardedAnalyst(claude, clock=clock, cache=ResponseCache(clock=clock, ttl_s=60))
    await guard.decide(request())
    clock.advance(59)
    assert (await guard.decide(request())).cached
    clock.advance(1)
    assert not (await guard.decide(request())).cached
    assert api.calls == 2


async def test_the_circuit_opens_after_n_failures_and_half_opens_as_the_clock_advances(
    claude: ClaudeAnalyst, api: FakeAnthropicApi, clock: ManualClock
) -> None:
    recorder = Recorder()
    breaker = CircuitBreaker(clock=clock, failure_threshold=2, reset_after_s=30)
    guard = GuardedAnalyst(
        claude, clock=clock, retry=Backoff(attempts=1), breaker=breaker, observer=recorder
    )
    api.fail(500, times=2)
    assert (await guard.decide(request("stress"))).fallback is FallbackReason.ERROR
    assert breaker.state is CircuitState.CLOSED
    assert (await guard.decide(request("stress"))).fallback is FallbackReason.ERROR
    assert breaker.state is CircuitState.OPEN
    assert (await guard.decide(request("stress"))).fallback is FallbackReason.CIRCUIT_OPEN
    assert api.calls == 2  # an open circuit sends nothing
    clock.advance(29)
    assert (await guard.decide(request("stress"))).fallback is FallbackReason.CIRCUIT_OPEN
    clock.advance(1)
    assert breaker.state is CircuitState.HALF_OPEN
    probe = await guard.decide(request("stress"))
    assert probe.fallback is None and probe.assessment.source is Source.LLM
    assert breaker.state is CircuitState.CLOSED
    assert api.calls == 3
    circuit = [event for kind, event in recorder.events if kind == "circuit"]
    assert circuit == [CircuitState.OPEN, CircuitState.HALF_OPEN, CircuitState.CLOSED]


async def test_a_failed_probe_opens_the_circuit_again(
    claude: ClaudeAnalyst, api: FakeAnthropicApi, clock: ManualClock
) -> None:
    breaker = CircuitBreaker(clock=clock, failure_threshold=1, reset_after_s=30)
    guard = GuardedAnalyst(claude, clock=clock, retry=Backoff(attempts=1), breaker=breaker)
    api.fail(529, times=2)
    await guard.decide(request())
    clock.advance(30)
    assert (await guard.decide(request())).fallback is FallbackReason.ERROR
    assert breaker.state is CircuitState.OPEN
    assert (await guard.decide(request())).fallback is FallbackReason.CIRCUIT_OPEN
    assert api.calls == 2


async def test_a_probe_stopped_by_the_budget_leaves_the_circuit_half_open(
    claude: ClaudeAnalyst, api: FakeAnthropicApi, clock: ManualClock, ledger: MemoryLedger
) -> None:
    breaker = CircuitBreaker(clock=clock, failure_threshold=1, reset_after_s=30)
    guard = GuardedAnalyst(
        claude, clock=clock, retry=Backoff(attempts=1), breaker=breaker, ledger=ledger
    )
    api.fail(500)
    await guard.decide(request())
    clock.advance(30)
    ledger.days[("ana", "2023-11-15")] = Usage(calls=10_000)
    assert (await guard.decide(request())).fallback is FallbackReason.BUDGET
    assert breaker.state is CircuitState.HALF_OPEN
    assert (await guard.decide(request(user="ben"))).fallback is None


async def test_the_observer_hears_cache_calls_usage_and_fallbacks(
    claude: ClaudeAnalyst, api: FakeAnthropicApi, clock: ManualClock
) -> None:
    recorder = Recorder()
    guard = GuardedAnalyst(claude, clock=clock, retry=Backoff(attempts=1), observer=recorder)
    await guard.decide(request())
    await guard.decide(request())
    api.fail(500)
    await guard.decide(request("stress"))
    kinds = [(kind, value) for kind, value in recorder.events if kind != "usage"]
    assert kinds == [
        ("cache", False),
        ("call", "ok"),
        ("cache", True),
        ("cache", False),
        ("call", "error"),
        ("fallback", FallbackReason.ERROR),
    ]
    assert sum(1 for kind, _ in recorder.events if kind == "usage") == 1


async def test_the_rules_analyst_answers_what_the_rules_say() -> None:
    req = replace(request("stress"), previous=State.CALM)
    assert await RulesAnalyst().assess(req) == rules_answer(req)


async def test_bedrock_is_reached_in_eu_central_1_with_a_bedrock_model_id() -> None:
    analyst = ClaudeAnalyst.bedrock()
    try:
        assert isinstance(analyst.client, AsyncAnthropicBedrock)
        assert analyst.client.aws_region == BEDROCK_REGION == "eu-central-1"
        assert analyst.model.startswith("eu.anthropic.claude-")
    finally:
        await analyst.aclose()


def test_the_usage_ledger_protocol_matches_the_stores_methods() -> None:
    """The store satisfies UsageLedger structurally; a drift in either would break that."""
    from server.store.base import Store  # the test may look at the server; brain may not

    for name in ("add_usage", "get_usage"):
        ours = inspect.signature(getattr(UsageLedger, name)).parameters
        theirs = inspect.signature(getattr(Store, name)).parameters
        assert [(p.name, p.kind) for p in ours.values()] == [
            (p.name, p.kind) for p in theirs.values()
        ]


# --- prompt caching -------------------------------------------------------------------------


async def test_tool_instructions_and_persona_are_marked_when_their_prefix_is_long_enough(
    guard: GuardedAnalyst, claude: ClaudeAnalyst, api: FakeAnthropicApi
) -> None:
    claude.cache_minimum_tokens = 100  # a model that caches from 100 tokens
    await guard.decide(request("hike"))

    body = api.requests[0].body
    assert body["tools"][-1]["cache_control"] == {"type": "ephemeral"}
    marked = [("cache_control" in block) for block in body["system"]]
    assert marked == [True, True, False]  # instructions, persona, then the environment
    assert body["system"][1]["text"] == persona(STRICT)
    assert body["system"][2]["text"].startswith("Environment:")


async def test_no_cache_mark_is_sent_when_the_prefix_is_under_the_models_minimum(
    guard: GuardedAnalyst, api: FakeAnthropicApi
) -> None:
    """Haiku 4.5 caches prefixes from 4,096 tokens; this prompt's static part is ~500."""
    await guard.decide(request("hike"))

    body = api.requests[0].body
    assert all("cache_control" not in tool for tool in body["tools"])
    assert all("cache_control" not in block for block in body["system"])
    assert body["system"][1]["text"] == persona(STRICT)


def test_only_the_marks_whose_prefix_reaches_the_minimum_are_kept() -> None:
    tool: Any = {"name": "t", "input_schema": {}, "cache_control": {"type": "ephemeral"}}
    tool_chars = len(orjson.dumps({"name": "t", "input_schema": {}}))
    mark: Any = {"type": "ephemeral"}
    system: list[Any] = [
        {"type": "text", "text": "a" * 300, "cache_control": mark},
        {"type": "text", "text": "b" * 300, "cache_control": mark},
        {"type": "text", "text": "c" * 300},
    ]
    minimum = math.ceil((tool_chars + 600) / CHARS_PER_TOKEN)  # reached at the second block

    tools, blocks = cache_marks([tool], system, minimum)

    assert "cache_control" not in tools[0] and tools[0]["name"] == "t"
    assert ["cache_control" in block for block in blocks] == [False, True, False]
    assert [block["text"] for block in blocks] == [block["text"] for block in system]
    assert cache_marks([tool], system, 0) == ([tool], system)


def test_the_cache_minimum_is_the_models_as_documented() -> None:
    assert cache_minimum_of("claude-haiku-4-5") == 4096
    assert cache_minimum_of("eu.anthropic.claude-haiku-4-5-20251001-v1:0") == 4096
    assert cache_minimum_of("claude-sonnet-4-5-20250929") == 1024
    assert cache_minimum_of("claude-opus-4-1-20250805") == 1024
    assert cache_minimum_of("claude-opus-4-5-20251101") == 4096
    assert cache_minimum_of("claude-3-5-haiku-20241022") == 2048
    assert cache_minimum_of("some-future-model") == 0  # unknown: every mark is kept


async def test_a_cached_prefix_is_written_once_read_after_and_billed_apart(
    guard: GuardedAnalyst, claude: ClaudeAnalyst, api: FakeAnthropicApi, ledger: MemoryLedger
) -> None:
    api.cache_minimum_tokens = 100  # the fake's prefix here is ~600 tokens
    claude.cache_minimum_tokens = 100
    await guard.decide(request("exercise", user="ana"))
    await guard.decide(request("stress", user="ben"))  # same persona: same cached prefix

    first, second = api.usages
    assert first["cache_creation_input_tokens"] > 0 and first["cache_read_input_tokens"] == 0
    assert second["cache_read_input_tokens"] == first["cache_creation_input_tokens"]
    assert second["cache_creation_input_tokens"] == 0
    ben = ledger.days[("ben", "2023-11-15")]
    assert ben.cache_read_tokens == second["cache_read_input_tokens"]
    assert ben.input_tokens == second["input_tokens"]
    price = price_of(MODEL)
    assert ben.cost_usd == pytest.approx(
        price.cost(
            second["input_tokens"],
            second["output_tokens"],
            cache_read_tokens=second["cache_read_input_tokens"],
        )
    )
    uncached = price.cost(
        second["input_tokens"] + second["cache_read_input_tokens"], second["output_tokens"]
    )
    assert ben.cost_usd < uncached
    assert guard.stats.cache_write_tokens == first["cache_creation_input_tokens"]


async def test_a_prefix_under_the_models_minimum_is_not_cached(
    guard: GuardedAnalyst, api: FakeAnthropicApi, ledger: MemoryLedger
) -> None:
    """Haiku 4.5 caches prefixes from 4,096 tokens: this prompt's static part is shorter."""
    await guard.decide(request("exercise", user="ana"))
    await guard.decide(request("stress", user="ben"))

    assert all(
        u["cache_creation_input_tokens"] == u["cache_read_input_tokens"] == 0 for u in api.usages
    )
    assert ledger.days[("ben", "2023-11-15")].cache_read_tokens == 0


def test_cache_writes_cost_125_and_reads_10_percent_of_input() -> None:
    haiku = price_of(MODEL)

    assert haiku.cost(0, 0, cache_write_tokens=1_000_000) == pytest.approx(1.25)
    assert haiku.cost(0, 0, cache_read_tokens=1_000_000) == pytest.approx(0.10)
    assert haiku.cost(1_000_000, 1_000_000) == pytest.approx(6.0)
