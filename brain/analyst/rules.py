"""The rules as an analyst: what answers when there is no LLM, or the LLM cannot."""

from __future__ import annotations

from brain.analyst.base import AnalysisRequest
from brain.model import Assessment
from brain.rules import assess


class RulesAnalyst:
    """An :class:`~brain.analyst.base.Analyst` that applies :func:`brain.rules.assess`.

    Deterministic, instant, and it never raises: the guard's fallback.
    """

    async def assess(self, request: AnalysisRequest) -> Assessment:
        """The rules' assessment of ``request`` (with its ``previous`` state for hysteresis)."""
        return assess(request.features, request.profile, previous=request.previous)
