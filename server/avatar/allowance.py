"""What a user's tier allows the avatar saga: generations per UTC day, and how long a cached
image is reused (:class:`AvatarAllowance`).

- **Cache lifetime**: a cache entry older than the tier's ``avatar_cache_ttl_s`` is stale
  for that user: the saga generates afresh (and the new image replaces the entry for
  everyone) — while the user still has generations left today.
- **Generations per day**: each generation a user's saga pays for counts against the day.
  Past the limit the saga degrades, never fails: a cached image however old, else the
  user keeps the image they have (``avatar_status`` back to ``ready``). The saga counts it
  as ``companion_tier_limits_total{limit="avatar_daily"}``.

Counts live in memory on the node that runs the user's sagas (the user's analysis owner
commits their changes), for at most ``max_users`` users; a restart forgets them, which costs
at most one more day's allowance. Pure apart from the clock passed in.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

from brain.analyst.base import utc_day
from brain.tiers import Tier
from server.store.base import AvatarCacheEntry

MAX_USERS: Final = 100_000


class AvatarAllowance:
    """Generations per user and UTC day, against each user's tier; see the module doc."""

    __slots__ = ("_days", "max_users")

    def __init__(self, *, max_users: int = MAX_USERS) -> None:
        if max_users < 1:
            raise ValueError(f"max_users must be positive, got {max_users}")
        self.max_users = max_users
        self._days: OrderedDict[str, tuple[str, int]] = OrderedDict()

    def used(self, user_id: str, now_ms: int) -> int:
        """Generations the user's sagas paid for on the UTC day of ``now_ms``."""
        day, count = self._days.get(user_id, ("", 0))
        return count if day == utc_day(now_ms) else 0

    def may_generate(self, user_id: str, tier: Tier, now_ms: int) -> bool:
        """Whether ``tier`` allows the user one more generation today."""
        return self.used(user_id, now_ms) < tier.avatar_generations_per_day

    def spend(self, user_id: str, now_ms: int) -> None:
        """Count one generation for the user today."""
        self._days[user_id] = (utc_day(now_ms), self.used(user_id, now_ms) + 1)
        self._days.move_to_end(user_id)
        while len(self._days) > self.max_users:
            self._days.popitem(last=False)

    def forget(self, user_id: str) -> None:
        """Drop the user's count (after an erase)."""
        self._days.pop(user_id, None)


def fresh(entry: AvatarCacheEntry, tier: Tier, now_ms: int) -> bool:
    """Whether ``entry`` is young enough for a user of ``tier`` to reuse."""
    return now_ms - entry.created_at <= tier.avatar_cache_ttl_s * 1000
