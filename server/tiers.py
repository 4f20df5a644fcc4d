"""The tiers of users this node has seen, so paths that cannot wait for the store (the REST
rate limit, the WebSocket's) know a user's tier: :class:`TierBook`.

The book learns a user's tier whenever the state service reads or writes the user's state
(the profile carries it) and when the tier route sets it. A user it has not seen yet, or
has forgotten (it holds at most ``max_users``, least recently seen out), is treated as the
default tier until the next read: the cheaper mistake is a premium user limited like a free
one for a moment, never a free user unlimited.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

from brain.model import Profile
from brain.tiers import DEFAULT_TIERS, Tier, Tiers

MAX_USERS: Final = 100_000


class TierBook:
    """User id → tier name for up to ``max_users`` users; see the module docstring."""

    __slots__ = ("_names", "max_users", "tiers")

    def __init__(self, tiers: Tiers = DEFAULT_TIERS, *, max_users: int = MAX_USERS) -> None:
        if max_users < 1:
            raise ValueError(f"max_users must be positive, got {max_users}")
        self.tiers = tiers
        self.max_users = max_users
        self._names: OrderedDict[str, str] = OrderedDict()

    def learn(self, user_id: str, profile: Profile) -> Tier:
        """Remember the tier of ``profile`` for ``user_id``; return it."""
        tier = self.tiers.tier_of(profile)
        self._names[user_id] = tier.name
        self._names.move_to_end(user_id)
        while len(self._names) > self.max_users:
            self._names.popitem(last=False)
        return tier

    def of(self, user_id: str) -> Tier:
        """The user's tier as last seen, the default tier when not seen."""
        name = self._names.get(user_id)
        return self.tiers.default if name is None else self.tiers.of(name)

    def forget(self, user_id: str) -> None:
        """Drop what is known of ``user_id`` (after an erase)."""
        self._names.pop(user_id, None)
