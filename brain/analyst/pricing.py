"""What LLM tokens cost, per model family, for the per-user daily budget.

Prices are US dollars per million tokens, from Anthropic's public price list (Bedrock
charges the same for on-demand use). A model id is matched by the longest family name it
contains, so dated ids (``claude-haiku-4-5-20251001``) and Bedrock ids
(``eu.anthropic.claude-haiku-4-5-20251001-v1:0``) find their family. An unknown model is
priced like the most expensive family: a budget should err towards stopping early.

Prompt caching is priced as Anthropic publishes it for the 5-minute cache: writing a prefix
to the cache costs 1.25 times the input price, reading it back 0.1 times. A prefix shorter
than the model's minimum (:data:`CACHE_MINIMUM_TOKENS`) is not cached at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

CACHE_WRITE_FACTOR = 1.25
"""A token written to the (5-minute) prompt cache costs this many input tokens."""

CACHE_READ_FACTOR = 0.1
"""A token read from the prompt cache costs this many input tokens."""


@dataclass(frozen=True, slots=True)
class Price:
    """US dollars per million input and output tokens."""

    input_per_mtok: float
    output_per_mtok: float

    def cost(
        self,
        input_tokens: int,
        output_tokens: int,
        *,
        cache_write_tokens: int = 0,
        cache_read_tokens: int = 0,
    ) -> float:
        """The cost in US dollars of a call with these token counts.

        ``input_tokens`` are the uncached ones, as the API reports them; cache writes and
        reads are priced apart (:data:`CACHE_WRITE_FACTOR`, :data:`CACHE_READ_FACTOR`).
        """
        input_equivalent = (
            input_tokens
            + cache_write_tokens * CACHE_WRITE_FACTOR
            + cache_read_tokens * CACHE_READ_FACTOR
        )
        return (input_equivalent * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1e6


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


CACHE_MINIMUM_TOKENS: Mapping[str, int] = {
    "claude-opus-4-6": 4096,
    "claude-opus-4-5": 4096,
    "claude-opus-4-1": 1024,
    "claude-opus-4": 1024,
    "claude-sonnet-4-6": 1024,
    "claude-sonnet-4-5": 1024,
    "claude-sonnet-4": 1024,
    "claude-3-7-sonnet": 1024,
    "claude-haiku-4-5": 4096,
    "claude-3-5-haiku": 2048,
    "claude-3-haiku": 2048,
}
"""The shortest prefix Anthropic's prompt cache keeps, in tokens, by model family (the
prompt-caching page of the API docs, as of 2026-12-01; see docs/cost.md). A shorter prefix
marked with ``cache_control`` is billed as plain input, silently."""

UNKNOWN_CACHE_MINIMUM = 0
"""The minimum assumed for a model not in :data:`CACHE_MINIMUM_TOKENS`: mark every
breakpoint (a mark the API cannot use costs nothing; a missed one costs the saving)."""


def price_of(model: str, prices: Mapping[str, Price] = PRICES) -> Price:
    """The price of the longest family in ``prices`` that ``model`` contains, else ``UNKNOWN``."""
    families = [family for family in prices if family in model]
    return prices[max(families, key=len)] if families else UNKNOWN


def cache_minimum_of(model: str) -> int:
    """The shortest cacheable prefix of ``model`` in tokens (longest family name it contains;
    :data:`UNKNOWN_CACHE_MINIMUM` for another model)."""
    families = [family for family in CACHE_MINIMUM_TOKENS if family in model]
    if not families:
        return UNKNOWN_CACHE_MINIMUM
    return CACHE_MINIMUM_TOKENS[max(families, key=len)]
