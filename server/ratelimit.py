"""Token buckets: ``rate`` tokens a second, at most ``burst`` saved. Pure: time is passed in.

:class:`TokenBucket` limits one thing (a WebSocket connection); :class:`BucketsByKey`
limits many (REST callers by token), holding at most ``max_keys`` buckets, the least
recently used dropped first, so no caller can grow it without bound.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar


class TokenBucket:
    """Allows ``rate`` events per second on average and bursts of up to ``burst``."""

    __slots__ = ("_stamp", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens if there are enough; ``False`` (nothing spent) if not."""
        elapsed = max(0.0, now - self._stamp)
        self._stamp = now
        self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate)
        if self._tokens < cost:
            return False
        self._tokens -= cost
        return True

    def wait_s(self, cost: float = 1.0) -> float:
        """Seconds from the last :meth:`take` until ``cost`` tokens are saved again."""
        return max(0.0, (cost - self._tokens) / self.rate)

    def retune(self, rate: float, burst: int) -> None:
        """Limit at ``rate`` and ``burst`` from now on, keeping what was saved: a larger
        burst adds its difference at once (as if the bucket had been that size), a smaller
        one caps the saved tokens."""
        self._tokens = min(float(burst), self._tokens + max(0, burst - self.burst))
        self.rate = rate
        self.burst = burst


K = TypeVar("K", bound=Hashable)


class BucketsByKey(Generic[K]):
    """One :class:`TokenBucket` per key, for at most ``max_keys`` keys (LRU).

    A key dropped for room comes back with a full bucket: only keys unseen for longest are
    dropped, and those had refilled anyway unless the limiter is far too small.
    """

    __slots__ = ("_buckets", "burst", "max_keys", "rate")

    def __init__(self, rate: float, burst: int, *, max_keys: int = 10_000) -> None:
        if rate <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate must be > 0, burst and max_keys >= 1")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[K, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: K, now: float, cost: float = 1.0) -> float:
        """Spend ``cost`` from ``key``'s bucket: 0.0 if allowed, else the whole seconds
        (at least 1) after which it would be, as ``Retry-After`` wants them."""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        if bucket.take(now, cost):
            return 0.0
        return float(max(1, math.ceil(bucket.wait_s(cost))))
