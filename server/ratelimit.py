"""A token bucket: ``rate`` tokens a second, at most ``burst`` saved. Pure: time is passed in."""

from __future__ import annotations


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
