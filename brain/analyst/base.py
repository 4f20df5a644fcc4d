"""What an analyst is, what it is asked, and the storage it needs (defined here, not in server).

An :class:`Analyst` turns an :class:`AnalysisRequest` (features, trend, baseline, profile,
environment of one user at ``now_ms``) into an :class:`~brain.model.Assessment`. A
:class:`MeteredAnalyst` also says what the answer cost, which the guard records in a
:class:`UsageLedger`: the per-user daily LLM use. The server's store has exactly the two
ledger methods, so it satisfies :class:`UsageLedger` structurally without brain importing it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from brain.features import Baseline, Features, TrendPoint, compute_features, trend
from brain.model import TIME_ORDER, Assessment, Env, Frame, Profile, State


@dataclass(frozen=True, slots=True)
class AnalysisRequest:
    """Everything an analyst may look at for one user at ``now_ms``.

    ``env`` is the latest environment reading (``None`` when the frames carry none);
    ``previous`` is the user's current state, which the rules use for hysteresis.
    """

    user_id: str
    now_ms: int
    features: Features
    profile: Profile
    baseline: Baseline | None = None
    trend: tuple[TrendPoint, ...] = ()
    env: Env | None = None
    previous: State | None = None


def build_request(
    user_id: str,
    frames: Iterable[Frame],
    *,
    now_ms: int,
    profile: Profile,
    baseline: Baseline | None = None,
    previous: State | None = None,
    tz_offset_min: int = 0,
) -> AnalysisRequest:
    """An :class:`AnalysisRequest` from a window's frames: features, trend and latest env."""
    frames = sorted(frames, key=TIME_ORDER)
    env = next((f.env for f in reversed(frames) if f.env is not None), None)
    return AnalysisRequest(
        user_id=user_id,
        now_ms=now_ms,
        features=compute_features(
            frames, now_ms=now_ms, baseline=baseline, tz_offset_min=tz_offset_min
        ),
        profile=profile,
        baseline=baseline,
        trend=trend(frames, now_ms=now_ms),
        env=env,
        previous=previous,
    )


@dataclass(frozen=True, slots=True)
class Answer:
    """A metered analyst's assessment with what it cost (``model`` as the API named it).

    ``input_tokens`` are the uncached input tokens; ``cache_write_tokens`` and
    ``cache_read_tokens`` the prompt-cache writes and reads, billed apart.
    """

    assessment: Assessment
    model: str
    input_tokens: int
    output_tokens: int
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0


class Analyst(Protocol):
    """Anything that can assess a request."""

    async def assess(self, request: AnalysisRequest) -> Assessment:
        """The assessment of ``request``; what it raises depends on the analyst."""
        ...


class MeteredAnalyst(Protocol):
    """An analyst that bills tokens (an LLM), so the guard can budget and record them."""

    @property
    def model(self) -> str:
        """The model asked (part of the cache key and of the price lookup)."""
        ...

    async def answer(self, request: AnalysisRequest) -> Answer:
        """Ask the model; raise :class:`~brain.analyst.errors.AnalystError` on any failure."""
        ...


class UsageTotals(Protocol):
    """One user's LLM use on one day (the server's ``Usage`` has these fields)."""

    @property
    def calls(self) -> int: ...

    @property
    def input_tokens(self) -> int: ...

    @property
    def output_tokens(self) -> int: ...

    @property
    def cost_usd(self) -> float: ...


class UsageLedger(Protocol):
    """Per-user daily LLM use; ``day`` is the UTC date as ``YYYY-MM-DD`` (see :func:`utc_day`)."""

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
    ) -> UsageTotals:
        """Atomically add to the user's day and return the new totals (``input_tokens``
        uncached; prompt-cache writes and reads apart)."""
        ...

    async def get_usage(self, user_id: str, day: str) -> UsageTotals:
        """The user's totals for ``day`` (zeros when there are none)."""
        ...


def utc_day(now_ms: int) -> str:
    """The UTC date of ``now_ms`` as ``YYYY-MM-DD``: the ledger's day."""
    return datetime.fromtimestamp(now_ms / 1000, tz=UTC).strftime("%Y-%m-%d")
