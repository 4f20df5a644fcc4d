"""The store interface: what the server keeps, whatever holds it.

Two adapters implement :class:`Store` and pass the same contract tests
(``tests/store/test_contract.py``): :mod:`server.store.sqlite` (the embedded default) and
:mod:`server.store.dynamodb` (production). Records are frozen dataclasses; the adapters
translate them to rows or items and back.

Concurrency rule: every write of a user's state is conditional on the version the writer
read (:meth:`Store.put_state`); a lost race raises :class:`~server.errors.VersionConflict`,
never overwrites.

Erase rule: :meth:`Store.delete_user` deletes the user's data and leaves a
:class:`Tombstone`: the user's **erase epoch** (how many times the user was erased) goes up
by one, and the version the erased state had is kept, so that versions keep growing across
an erase (a device that saw version 7 before takes version 8 after it as news, never a
replay). Every state read carries the epoch (:attr:`UserState.epoch`) and every state write
is also conditional on it, in the same conditional write, so work that read the user before
an erase (an analysis, an avatar saga, a retry, on any node) can never write the user again:
its write meets another epoch and raises :class:`~server.errors.VersionConflict`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from brain.hashing import state_hash
from brain.model import AvatarStatus, Frame, Profile

FrameRow = tuple[str, Frame]
"""A frame and the user it belongs to: the unit of a write-behind batch."""


@dataclass(frozen=True, slots=True)
class UserState:
    """A user's current state: version, hash, the visible fields, profile and time.

    ``version`` 0 means "nothing committed yet"; every committed change adds one.
    ``updated_at`` is the commit time in epoch milliseconds.
    """

    user_id: str
    version: int = 0
    state_hash: str = ""
    state: str = "calm"
    mood: str = "content"
    energy: int = 70
    reasoning: str = ""
    actions: tuple[str, ...] = ()
    source: str = "rules"
    image_url: str | None = None
    avatar_status: str = AvatarStatus.NONE.value
    profile: Profile = field(default_factory=Profile)
    updated_at: int = 0
    epoch: int = 0
    """The user's erase epoch when this state was read; a write applies only while the
    stored epoch is still this one (not a visible field: devices never see it)."""

    def visible(self) -> dict[str, Any]:
        """The fields a device displays (the ones the state hash covers)."""
        return {
            "state": self.state,
            "mood": self.mood,
            "energy": self.energy,
            "reasoning": self.reasoning,
            "actions": list(self.actions),
            "source": self.source,
            "image_url": self.image_url,
            "avatar_status": self.avatar_status,
        }

    def rehashed(self) -> UserState:
        """This state with ``state_hash`` recomputed from the visible fields."""
        return replace(self, state_hash=state_hash(self.visible()))

    @classmethod
    def initial(cls, user_id: str) -> UserState:
        """The state of a user nobody has committed anything for yet (version 0)."""
        return cls(user_id=user_id).rehashed()


@dataclass(frozen=True, slots=True)
class AvatarCacheEntry:
    """A generated avatar, shared by every user whose prompt hashes to ``cache_hash``."""

    cache_hash: str
    image_url: str
    prompt: str
    created_at: int
    video_url: str | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    """LLM use of one user on one UTC day (``day`` is ``YYYY-MM-DD``)."""

    user_id: str
    day: str
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


@dataclass(frozen=True, slots=True)
class Tombstone:
    """What erases left of a user: the version the next state follows, and the erase epoch
    (both 0 for a user never erased)."""

    version: int = 0
    epoch: int = 0


class Store(Protocol):
    """Durable storage of frames, user state, the avatar cache and LLM usage."""

    async def open(self) -> None:
        """Connect, and create tables the embedded adapter owns. Idempotent."""

    async def close(self) -> None:
        """Release connections. Idempotent."""

    async def ping(self) -> None:
        """Raise :class:`~server.errors.StoreError` unless the store answers (readiness)."""

    async def put_frames(self, rows: Sequence[FrameRow]) -> None:
        """Write frames durably; a row whose key exists already is left as it is.

        Raises :class:`~server.errors.FramesNotDurable` naming the rows that were not
        written (the others are durable), or :class:`~server.errors.StoreError`.
        """

    async def frames_between(
        self, user_id: str, start_ms: int, end_ms: int, *, now_ms: int
    ) -> list[Frame]:
        """The user's frames with ``start_ms <= ts < end_ms``, oldest first.

        Frames whose retention ended before ``now_ms`` are left out even if the backend has
        not deleted them yet.
        """

    async def get_state(self, user_id: str) -> UserState | None:
        """The user's current state, or ``None`` when nothing was written since the last
        erase (or ever)."""

    async def tombstone(self, user_id: str) -> Tombstone:
        """The tombstone of an erased user with no state since; ``Tombstone()`` for a user
        never erased. (For a user with a state, read :meth:`get_state`.)"""

    async def put_state(self, state: UserState, expected_version: int) -> None:
        """Write ``state`` if the stored version is ``expected_version`` (0: no row yet; a
        tombstone's version for an erased user) and the stored erase epoch is ``state.epoch``,
        in one conditional write.

        ``state.version`` is normally ``expected_version + 1``; a profile-only change keeps
        the version. Raises :class:`~server.errors.VersionConflict` otherwise.
        """

    async def users_with_avatar_status(self, status: str, limit: int = 1000) -> list[str]:
        """Ids of users whose ``avatar_status`` is ``status`` (for replaying failed sagas)."""

    async def get_avatar(self, cache_hash: str) -> AvatarCacheEntry | None:
        """The cached avatar for ``cache_hash``, or ``None``."""

    async def put_avatar(self, entry: AvatarCacheEntry) -> None:
        """Store a cache entry (a later entry for the same hash replaces it)."""

    async def add_usage(
        self,
        user_id: str,
        day: str,
        *,
        calls: int,
        input_tokens: int,
        output_tokens: int,
        cost_usd: float,
    ) -> Usage:
        """Atomically add to a user's day of LLM use and return the new totals."""

    async def get_usage(self, user_id: str, day: str) -> Usage:
        """A user's LLM use on ``day`` (zeros when there is none)."""

    async def export_user(self, user_id: str, *, now_ms: int) -> dict[str, Any]:
        """Everything stored about a user, as JSON-ready data (``state``, ``frames``, ``usage``)."""

    async def delete_user(self, user_id: str) -> int:
        """Erase a user's frames, usage and state, then leave a tombstone of the next erase
        epoch (in this order, so a reader that sees the new epoch finds no frames); return
        how many records were deleted (the tombstone is not counted)."""
