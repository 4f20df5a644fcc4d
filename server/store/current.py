"""The current state of active users, kept in memory by the process that commits for them.

:class:`CurrentStates` is a bounded LRU map ``user_id → UserState``: the state this process
last read from the store or committed to it. It saves the commit path its read round trip;
it never decides whether a write may happen — every state write stays conditional on the
version, the erase epoch and the profile the writer started from
(:meth:`~server.store.base.Store.put_state`), so a stale entry costs one failed write and a
re-read, never a lost or duplicated version.

What keeps the entries honest (:class:`~server.state.StateService` does the calls):

- a commit of this process replaces its user's entry by the committed state;
- a lost version race (:class:`~server.errors.VersionConflict`) drops it;
- a delta heard on the broker with a newer version (another node committed) drops it;
- the broker coming back after an outage drops every entry (deltas may have been lost);
- an erase drops it, and a read or write that began before the erase is not kept
  (:meth:`ticket`: any drop voids the results of reads under way).

Memory: an entry is a :class:`~server.store.base.UserState` (a few short strings, a reasoning
of about a hundred characters, two media URLs) plus its place in the LRU: about 0.9 KiB per
user, measured with ``tracemalloc`` over 20,000 such states (66 bytes of it the map itself),
so the default bound of 100,000 users holds about 90 MiB at most.
"""

from __future__ import annotations

from collections import OrderedDict

from server.store.base import UserState

DEFAULT_MAX_USERS = 100_000
"""Users whose current state a process keeps by default (``COMPANION_STATE_CACHE_USERS``)."""


class CurrentStates:
    """A bounded LRU of users' current states; see the module docstring.

    ``max_users`` 0 keeps nothing (every read goes to the store). Raises
    :class:`ValueError` for a negative bound.
    """

    __slots__ = ("_drops", "_max_users", "_states")

    def __init__(self, max_users: int = DEFAULT_MAX_USERS) -> None:
        if max_users < 0:
            raise ValueError(f"max_users must be 0 or more, got {max_users}")
        self._max_users = max_users
        self._states: OrderedDict[str, UserState] = OrderedDict()
        self._drops = 0
        """How many drops happened: a read or write that saw another count when it began
        may have raced an erase or a newer commit, and is not kept."""

    def __len__(self) -> int:
        return len(self._states)

    @property
    def max_users(self) -> int:
        return self._max_users

    def get(self, user_id: str) -> UserState | None:
        """The kept state of ``user_id`` (now the most recently used), or ``None``."""
        state = self._states.get(user_id)
        if state is not None:
            self._states.move_to_end(user_id)
        return state

    def ticket(self) -> int:
        """Taken before a store read or write whose result :meth:`keep` may keep."""
        return self._drops

    def keep(self, state: UserState, ticket: int) -> None:
        """Keep ``state`` as its user's current state, unless something was dropped since
        ``ticket`` was taken, or the entry holds a later state (a slow read returning after
        a commit). The least recently used user goes when the bound is reached."""
        if ticket != self._drops or not self._max_users:
            return
        held = self._states.get(state.user_id)
        if held is not None and (held.epoch, held.version) > (state.epoch, state.version):
            return
        self._states[state.user_id] = state
        self._states.move_to_end(state.user_id)
        while len(self._states) > self._max_users:
            self._states.popitem(last=False)

    def drop(self, user_id: str) -> None:
        """Forget ``user_id`` (erased, a lost race, or changed by another node)."""
        self._drops += 1
        self._states.pop(user_id, None)

    def heard(self, user_id: str, version: int) -> None:
        """A delta of ``user_id`` at ``version`` came over the broker: drop the entry when
        the delta is newer (another node committed); our own commits come back at the
        version we hold, or older when they arrive late."""
        held = self._states.get(user_id)
        if held is not None and version > held.version:
            self.drop(user_id)

    def clear(self) -> None:
        """Forget every user (the broker was away: deltas may have been missed)."""
        self._drops += 1
        self._states.clear()
