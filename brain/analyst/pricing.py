"""What LLM tokens cost, per model family, for the per-user daily budget.

Prices are US dollars per million tokens, from Anthropic's public price list (Bedrock
charges the same for on-demand use). A model id is matched by the longest family name it
contains, so dated ids (``claude-haiku-4-5-20251001``) and Bedrock ids
(``eu.anthropic.claude-haiku-4-5-20251001-v1:0``) find their family. An unknown model is
priced like the most expensive family: a budget should err towards stopping early.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Price:
    """US dollars per million input and output tokens."""

    input_per_mtok: float
    output_per_mtok: float

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """The cost in US dollars of a call with these token counts."""
        return (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1e6


PRICES: Mapping[str, Price] = {
    "claude-opus-4-5": Price(5.0, 25.0),
    "claude-opus-4": Price(15.0, 75.0),
    "claude-sonnet-4": Price(3.0, 15.0),
    "claude-3-7-sonnet": Price(3.0, 15.0),
    "claude-haiku-4-5": Price(1.0, 5.0),
    "claude-3-5-haiku": Price(0.8, 4.0),
    "claude-3-haiku": Price(0.25, 1.25),
}
"""Prices by model family (a substring of the model id)."""

UNKNOWN = Price(15.0, 75.0)
"""The price assumed for a model not in :data:`PRICES`."""


def price_of(model: str, prices: Mapping[str, Price] = PRICES) -> Price:
    """The price of the longest family in ``prices`` that ``model`` contains, else ``UNKNOWN``."""
    families = [family for family in prices if family in model]
    return prices[max(families, key=len)] if families else UNKNOWN
