"""The one backoff policy of the project: capped exponential delays with full jitter.

Every loop that tries again uses it: the store's writes, the Redis broker's reconnect, the
analyst's calls to Claude, the avatar saga's generations, and the clients' reconnects. Full
jitter (a delay drawn uniformly from ``[0, min(cap, base * 2**n)]``) spreads the retries of
many writers throttled at the same moment, or of many phones that lost the same node, over
the whole window instead of sending them back together (AWS's "Exponential Backoff And
Jitter").

It lives in ``brain`` because ``brain`` is the bottom layer: ``server`` and ``clients`` both
import it, and it imports neither (the import contracts in ``pyproject.toml``). It does no I/O
of its own: the sleep and the random source are fields, so a test passes :func:`instant` and
retries cost no time, as with hynek/stamina's testing switch.
"""

from __future__ import annotations

import asyncio
import random as _random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

Sleep = Callable[[float], Awaitable[None]]
"""An awaitable sleep, ``asyncio.sleep`` in production."""

Random = Callable[[], float]
"""A draw from [0, 1), like :func:`random.random`."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """At most ``attempts`` tries (``None``: forever), full-jitter delays between them.

    ``attempts`` counts the first try, so ``attempts=1`` never retries. ``soon`` is the
    window of a "come back soon" pause (a server restart, an overloaded node): short, but
    still jittered. Raises :class:`ValueError` on construction for a bound that makes no
    sense.
    """

    attempts: int | None = 8
    base: float = 0.05
    cap: float = 5.0
    soon: float = 1.0
    sleep: Sleep = field(default=asyncio.sleep, compare=False, repr=False)
    random: Random = field(default=_random.random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.attempts is not None and self.attempts < 1:
            raise ValueError(f"attempts must be at least 1 (or None), got {self.attempts}")
        if not 0 <= self.base <= self.cap or self.soon < 0:
            raise ValueError(
                f"need 0 <= base <= cap and soon >= 0, got base={self.base} cap={self.cap}"
                f" soon={self.soon}"
            )

    def ceiling(self, retry: int) -> float:
        """The largest delay before retry number ``retry`` (0 for the first retry)."""
        if retry < 0:
            raise ValueError(f"retry must be >= 0, got {retry}")
        # The power would overflow for absurd retry numbers; the cap is reached long before.
        return min(self.cap, self.base * 2.0 ** min(retry, 62))

    def delay(self, retry: int) -> float:
        """A full-jitter delay before retry number ``retry``: uniform in ``[0, ceiling)``."""
        return self.random() * self.ceiling(retry)

    def soon_delay(self) -> float:
        """A jittered pause of at most ``soon`` seconds."""
        return self.random() * self.soon

    def may_retry(self, retry: int) -> bool:
        """Whether retry number ``retry`` (0 for the first) is within ``attempts``."""
        return self.attempts is None or retry + 1 < self.attempts

    async def wait(self, retry: int) -> None:
        """Sleep the delay before retry number ``retry``."""
        await self.sleep(self.delay(retry))


async def _no_sleep(_delay: float) -> None:
    # Still yield to the loop, so a retry loop under test interleaves with other tasks the
    # way it would in production.
    await asyncio.sleep(0)


def instant(policy: Backoff | None = None, *, record: list[float] | None = None) -> Backoff:
    """``policy`` (default: the default policy) with delays that take no time.

    Each delay the policy would have slept is appended to ``record`` when one is given, so a
    test can check how often and how long the code under test backed off.
    """

    async def recording_sleep(delay: float) -> None:
        if record is not None:
            record.append(delay)
        await _no_sleep(delay)

    return replace(policy or Backoff(), sleep=recording_sleep)
