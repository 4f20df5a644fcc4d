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
by one, and the blank state it leaves is one version on from the erased one, so that
versions keep growing across an erase (a device that saw version 7 before takes the blank
version 8 as news, and version 9 after it, never a replay; erasing a tombstone again keeps
its version). Every state read carries the epoch (:attr:`UserState.epoch`) and every state write
is also conditional on it, in the same conditional write, so work that read the user before
an erase (an analysis, an avatar saga, a retry, on any node) can never write the user again:
its write meets another epoch and raises :class:`~server.errors.VersionConflict`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, Protocol

from brain.hashing import state_hash
from brain.health import HealthMetrics
from brain.model import VISIBLE_FIELDS, AvatarStatus, Frame, Profile
from server.provenance import Provenance

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
    video_url: str | None = None
    video_status: str = AvatarStatus.NONE.value
    health: HealthMetrics | None = None
    """The health metrics as of this version (:mod:`brain.health`); ``None``: none yet."""
    profile: Profile = field(default_factory=Profile)
    updated_at: int = 0
    epoch: int = 0
    """The user's erase epoch when this state was read; a write applies only while the
    stored epoch is still this one (not a visible field: devices never see it)."""

    def visible(self) -> dict[str, Any]:
        """The fields a device displays (the ones the state hash covers)."""
        visible = {name: getattr(self, name) for name in VISIBLE_FIELDS}
        visible["actions"] = list(self.actions)
        visible["health"] = None if self.health is None else self.health.to_dict()
        return visible

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
class SagaRecord:
    """An avatar saga in flight, kept so that another process can resume it.

    One per user (a newer saga of the user replaces the record). ``owner`` names the node
    running it, which holds it until ``lease_until`` (epoch ms) and renews that while it
    works; ``attempts`` counts the starts, resumes included. ``cache_hash`` is the prompt
    hash (sha256 of prompt and base avatar) the saga makes the image of.
    """

    user_id: str
    saga_id: str
    cache_hash: str
    owner: str
    started_at: int
    lease_until: int
    attempts: int = 1


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An avatar saga that failed after its retries, kept until an operator replays it.

    ``failed_at`` is epoch ms; ``reason`` is the last error (the generator's own words,
    never client input); ``state`` and ``mood`` are what the image was for.
    """

    user_id: str
    failed_at: int
    saga_id: str
    cache_hash: str
    reason: str
    state: str
    mood: str
    attempts: int = 1

    @property
    def key(self) -> str:
        """The letter's key within its user: failure time, then saga id (sorts by time)."""
        return f"{self.failed_at:013d}#{self.saga_id}"


@dataclass(frozen=True, slots=True)
class Usage:
    """LLM use of one user on one UTC day (``day`` is ``YYYY-MM-DD``), and the estimated
    dollars of the other services (:data:`SERVICE_COSTS`) that day.

    ``input_tokens`` are the uncached input tokens; prompt-cache writes and reads are
    counted apart (they are billed at 1.25 and 0.1 times the input price). ``cost_usd`` is
    the LLM's.
    """

    user_id: str
    day: str
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0
    images_usd: float = 0.0
    clips_usd: float = 0.0
    storage_usd: float = 0.0
    pushes_usd: float = 0.0


SERVICE_COSTS: Final = ("images_usd", "clips_usd", "storage_usd", "pushes_usd")
"""The usage fields of the services other than the LLM (``<service>_usd``,
:class:`brain.cost.Service`), which :meth:`Store.add_service_costs` adds to."""


@dataclass(frozen=True, slots=True)
class HistoryEvent:
    """One committed version of a user's state, as the decision history keeps it.

    ``at`` is the commit time (epoch ms, the version's ``updated_at``); ``cause`` what made
    the commit (``analysis``, ``avatar``, ``demo``…) and ``source`` who decided (``rules``,
    ``llm``, ``manual``, ``avatar``); ``changed`` names the visible fields that changed.
    ``provenance`` says how the decision was reached, when the decider told.
    """

    user_id: str
    version: int
    at: int
    cause: str
    source: str
    state: str
    mood: str
    energy: int
    reasoning: str = ""
    actions: tuple[str, ...] = ()
    image_url: str | None = None
    video_url: str | None = None
    changed: tuple[str, ...] = ()
    provenance: Provenance = field(default_factory=Provenance)


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """Which of a user's history events to read: newest first, at most ``limit``.

    Bounds are exclusive and optional: versions below ``before_version`` and above
    ``since_version``, commit times (epoch ms) below ``before_ms`` and from ``since_ms`` on.
    """

    limit: int = 20
    before_version: int | None = None
    since_version: int | None = None
    before_ms: int | None = None
    since_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Tombstone:
    """What erases left of a user: the version the next state follows, the erase epoch
    (both 0 for a user never erased) and when the last erase was (epoch ms; 0: never, or
    a tombstone written before erases kept their time)."""

    version: int = 0
    epoch: int = 0
    erased_at: int = 0


@dataclass(frozen=True, slots=True)
class DeviceSeen:
    """The newest version of a user's state that one device has shown, and when it said so.

    ``device`` is the device's own name (1-64 of ``A-Za-z0-9._:-``); ``kind`` is ``phone``,
    ``watch``, ``debug`` or ``service``; ``seen_at`` is epoch ms.
    """

    user_id: str
    device: str
    kind: str
    version: int
    seen_at: int


PENDING = "pending"
"""The outcome of a command nobody has answered yet (and that has not expired)."""
EXPIRED = "expired"
"""The outcome of a command nobody answered before its expiry (or answered too late)."""
OUTCOMES = frozenset({"done", "dismissed", EXPIRED})
"""The outcomes a command ends with; once one is recorded it never changes."""


@dataclass(frozen=True, slots=True)
class CommandRecord:
    """One action of an assessment as a command to a device, and its outcome.

    ``command_id`` is deterministic per (user, version, action) (:mod:`server.hops.commands`),
    so a retried write or a resent result lands on the same record. ``issued_at`` and
    ``expires_at`` are epoch ms; ``outcome`` is :data:`PENDING` or one of :data:`OUTCOMES`;
    ``device`` names who answered (``None``: the server expired it).
    """

    user_id: str
    command_id: str
    kind: str
    params: Mapping[str, Any]
    version: int
    issued_at: int
    expires_at: int
    outcome: str = PENDING
    outcome_at: int | None = None
    device: str | None = None


class Store(Protocol):
    """Durable storage of frames, user state, the avatar cache, LLM usage and the decision
    history."""

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

    async def put_state(
        self, state: UserState, expected_version: int, *, expected_profile: Profile | None = None
    ) -> None:
        """Write ``state`` if the stored version is ``expected_version`` (0: no row yet; a
        tombstone's version for an erased user) and the stored erase epoch is ``state.epoch``,
        and, when ``expected_profile`` is given and a live state is stored, its profile is
        ``expected_profile``; all in one conditional write.

        ``state.version`` is normally ``expected_version + 1``; a profile-only change keeps
        the version, which is why a writer that may hold an old profile (a cached state)
        names the one it read: a profile changed meanwhile (by another node or process) is a
        lost race too, never overwritten. Raises :class:`~server.errors.VersionConflict`
        otherwise.
        """

    async def users_with_avatar_status(self, status: str, limit: int = 1000) -> list[str]:
        """Ids of users whose ``avatar_status`` is ``status`` (for replaying failed sagas)."""

    async def get_avatar(self, cache_hash: str) -> AvatarCacheEntry | None:
        """The cached avatar for ``cache_hash``, or ``None``."""

    async def put_avatar(self, entry: AvatarCacheEntry) -> None:
        """Store a cache entry (a later entry for the same hash replaces it)."""

    async def put_saga(self, record: SagaRecord) -> None:
        """Record a saga in flight, replacing the user's earlier record."""

    async def claim_saga(
        self, user_id: str, saga_id: str, owner: str, *, now_ms: int, lease_until: int
    ) -> SagaRecord | None:
        """Take over saga ``saga_id`` of ``user_id`` for ``owner`` until ``lease_until``
        (one more attempt) if it is still recorded and its lease ended before ``now_ms``
        or ``owner`` holds it already; atomic, so two nodes never both win. The claimed
        record, or ``None``."""

    async def renew_saga(self, user_id: str, saga_id: str, owner: str, lease_until: int) -> bool:
        """Extend ``owner``'s lease of the saga to ``lease_until``; ``False`` when the saga
        ended or another owner took it over."""

    async def resumable_sagas(
        self, owner: str, *, now_ms: int, limit: int = 100
    ) -> list[SagaRecord]:
        """Up to ``limit`` sagas ``owner`` may claim: lease ended before ``now_ms``, or its own."""

    async def end_saga(self, user_id: str, saga_id: str) -> None:
        """Forget saga ``saga_id`` of the user (a newer saga's record is left alone)."""

    async def add_dead_letter(self, letter: DeadLetter) -> None:
        """Keep a failed saga in the dead-letter list."""

    async def dead_letters(self, limit: int = 1000) -> list[DeadLetter]:
        """Up to ``limit`` dead letters, oldest first (an admin path: it may scan)."""

    async def remove_dead_letter(self, user_id: str, key: str) -> None:
        """Remove one dead letter (by :attr:`DeadLetter.key`); idempotent."""

    async def add_usage(
        self,
        user_id: str,
        day: str,
        *,
        calls: int,
        input_tokens: int,
        output_tokens: int,
        cost_usd: float,
        cache_write_tokens: int = 0,
        cache_read_tokens: int = 0,
    ) -> Usage:
        """Atomically add to a user's day of LLM use and return the new totals."""

    async def add_service_costs(self, user_id: str, day: str, costs: Mapping[str, float]) -> None:
        """Atomically add dollars to a user's day, by field of :data:`SERVICE_COSTS`
        (``images_usd``…). Raises :class:`ValueError` for another name."""

    async def get_usage(self, user_id: str, day: str) -> Usage:
        """A user's LLM use on ``day`` (zeros when there is none)."""

    async def put_seen(self, seen: DeviceSeen) -> None:
        """Record what a device has shown, replacing its earlier record."""

    async def devices_seen(self, user_id: str) -> list[DeviceSeen]:
        """The user's devices with what each has shown, by device name."""

    async def put_commands(self, commands: Sequence[CommandRecord]) -> None:
        """Record new commands; a command whose id is recorded already is left as it is
        (so a retried write never resets an outcome)."""

    async def settle_command(
        self, user_id: str, command_id: str, outcome: str, *, device: str | None, at: int
    ) -> CommandRecord | None:
        """Record ``outcome`` of a pending command at ``at`` (epoch ms), atomically and once:
        a command settled already keeps its first outcome, and an answer after the command's
        ``expires_at`` records ``expired`` whatever it said. The command as it is now, or
        ``None`` when there is no such command."""

    async def commands_of(self, user_id: str, limit: int = 100) -> list[CommandRecord]:
        """The user's newest ``limit`` commands, newest first."""

    async def export_user(self, user_id: str, *, now_ms: int) -> dict[str, Any]:
        """Everything stored about a user, as JSON-ready data (``state``, ``frames``, ``usage``)."""

    async def delete_user(self, user_id: str, *, at_ms: int | None = None) -> int:
        """Erase a user's frames, usage, saga and dead letters and state, then leave a
        tombstone of the next erase epoch (in this order, so a reader that sees the new epoch
        finds no frames), stamped with the erase time ``at_ms`` (epoch ms; ``None``: now);
        return how many records were deleted (the tombstone is not counted)."""

    async def put_history(self, event: HistoryEvent) -> bool:
        """Record ``event`` unless an event of its (user, version) is recorded already or
        the user has no state at that version or later (erased meanwhile).

        Returns whether this call recorded it: a retry, or a second node, records nothing
        twice. Raises :class:`~server.errors.StoreError`.
        """

    async def history(
        self, user_id: str, query: HistoryQuery, *, now_ms: int
    ) -> list[HistoryEvent]:
        """The user's history events that ``query`` selects, newest first, leaving out
        those whose retention ended before ``now_ms``."""

    async def delete_history(self, user_id: str) -> int:
        """Erase every history event of the user (expired ones too); return how many."""
