"""How the store retries: a bounded number of attempts, exponential backoff, full jitter.

Full jitter (a delay drawn uniformly from ``[0, min(max_delay, base_delay * 2**n)]``)
spreads the retries of many writers that were throttled at the same moment, instead of
sending them back together (see AWS's "Exponential Backoff And Jitter"). The policy is a
value: the sleep and the random source are fields, so a test passes :func:`instant` (or its
own callables) and retries cost no time, as with hynek/stamina's testing switch.
"""

from __future__ import annotations

import asyncio
import random as _random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

Sleep = Callable[[float], Awaitable[None]]
"""An awaitable sleep, ``asyncio.sleep`` in production."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """At most ``attempts`` tries of one operation, with full-jitter delays between them.

    ``attempts`` counts the first try, so ``attempts=1`` never retries. Raises
    :class:`ValueError` on construction for a bound that makes no sense.
    """

    attempts: int = 8
    base_delay: float = 0.05
    max_delay: float = 5.0
    sleep: Sleep = field(default=asyncio.sleep, compare=False, repr=False)
    random: Callable[[], float] = field(default=_random.random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {self.attempts}")
        if self.base_delay < 0 or self.max_delay < self.base_delay:
            raise ValueError(
                f"need 0 <= base_delay <= max_delay, got {self.base_delay} and {self.max_delay}"
            )

    def ceiling(self, retry: int) -> float:
        """The largest delay before retry number ``retry`` (0 for the first retry)."""
        # min() before the power would overflow for absurd retry numbers; cap the exponent.
        return min(self.max_delay, self.base_delay * 2.0 ** min(retry, 62))

    def delay(self, retry: int) -> float:
        """A full-jitter delay before retry number ``retry``: uniform in ``[0, ceiling]``."""
        return self.random() * self.ceiling(retry)

    async def backoff(self, retry: int) -> None:
        """Wait the delay before retry number ``retry``."""
        await self.sleep(self.delay(retry))


async def _no_sleep(_delay: float) -> None:
    # Still yield to the loop, so a retry loop under test interleaves with other tasks the
    # way it would in production.
    await asyncio.sleep(0)


def instant(policy: RetryPolicy | None = None, *, record: list[float] | None = None) -> RetryPolicy:
    """``policy`` (default: the default policy) with delays that take no time.

    Each delay the policy would have slept is appended to ``record`` when one is given, so a
    test can check how often and how long the code under test backed off.
    """

    async def recording_sleep(delay: float) -> None:
        if record is not None:
            record.append(delay)
        await _no_sleep(delay)

    return replace(policy or RetryPolicy(), sleep=recording_sleep)
