"""Values shared by the brain, the server and the wire: frames, enums and assessments.

Everything here is a frozen, slotted dataclass or an enum, so it can be hashed, compared
and passed between tasks without copying. The enums are the vocabulary that the rules, the
LLM analyst, the avatar prompt and the wire protocol all agree on; a value outside them is
rejected wherever it enters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from brain.health import HealthMetrics


class State(StrEnum):
    """What the user's body is doing, as decided from a window of frames."""

    CALM = "calm"
    STRESSED = "stressed"
    EXERCISING = "exercising"
    FATIGUED = "fatigued"
    RESTING = "resting"
    SLEEPING = "sleeping"


class Mood(StrEnum):
    """How the companion pet feels about it (what the avatar shows)."""

    HAPPY = "happy"
    CONTENT = "content"
    ANXIOUS = "anxious"
    ENERGIZED = "energized"
    TIRED = "tired"
    SLEEPY = "sleepy"


class Action(StrEnum):
    """A suggestion the companion may make to the user."""

    BREATHING = "breathing_session"
    DOWNGRADE_WORKOUT = "downgrade_workout"
    HYDRATE = "hydrate"
    REST = "rest"
    KEEP_GOING = "keep_going"
    WIND_DOWN = "wind_down"
    MOVE = "move"


class Source(StrEnum):
    """Who decided an assessment."""

    RULES = "rules"
    LLM = "llm"
    MANUAL = "manual"


class AvatarStatus(StrEnum):
    """Where the avatar image of the current state stands."""

    NONE = "none"
    GENERATING = "generating"
    READY = "ready"
    FAILED = "failed"


class CoachStyle(StrEnum):
    STRICT = "strict"
    ENCOURAGING = "encouraging"
    NEUTRAL = "neutral"


class CoachTone(StrEnum):
    DIRECT = "direct"
    GENTLE = "gentle"


class EnergyBand(StrEnum):
    """Energy (0-100) in three bands; only a change of band counts as a change of state."""

    LOW = "low"
    MID = "mid"
    HIGH = "high"

    @classmethod
    def of(cls, energy: int) -> EnergyBand:
        """The band of an energy value: low below 34, high from 67, mid between."""
        if energy < 34:
            return cls.LOW
        if energy >= 67:
            return cls.HIGH
        return cls.MID


@dataclass(frozen=True, slots=True)
class Env:
    """The environment around the user when a frame was taken; every field is optional."""

    altitude_m: float | None = None
    temp_c: float | None = None
    humidity_pct: float | None = None
    speed_mps: float | None = None
    weather: str | None = None


@dataclass(frozen=True, slots=True)
class Frame:
    """One sensor sample. ``ts`` is epoch milliseconds; the other fields are optional.

    ``(ts, device, seq)`` is the frame's identity within a user: a resent frame lands on
    the same key. ``seq`` numbers samples one device takes in the same millisecond (0 when
    a device takes at most one sample per millisecond, which is the normal case).
    """

    ts: int
    hr: float | None = None
    hrv: float | None = None
    steps: int | None = None
    spo2: float | None = None
    skin_temp: float | None = None
    resp_rate: float | None = None
    device: str = "unknown"
    seq: int = 0
    env: Env | None = None

    @property
    def key(self) -> str:
        """The sort key within a user: zero-padded ts, device, seq (sorts by time)."""
        return f"{self.ts:013d}#{self.device}#{self.seq}"


TIME_ORDER = attrgetter("ts", "device", "seq")
"""Sort key for frames in memory: by time, then device and sequence number. The order of
:attr:`Frame.key` by time, without formatting a string per frame (analyses sort thousands)."""

# The slots' own setters: a frozen dataclass's ``__init__`` sets each field through
# ``object.__setattr__`` by name, which costs twice as much as calling the slot directly,
# and the ingest path builds tens of thousands of frames a second.
_new_object = object.__new__
(
    _set_ts,
    _set_hr,
    _set_hrv,
    _set_steps,
    _set_spo2,
    _set_skin_temp,
    _set_resp_rate,
    _set_device,
    _set_seq,
    _set_env,
) = (
    getattr(Frame, name).__set__
    for name in (
        "ts",
        "hr",
        "hrv",
        "steps",
        "spo2",
        "skin_temp",
        "resp_rate",
        "device",
        "seq",
        "env",
    )
)


def new_frame(
    ts: int,
    hr: float | None,
    hrv: float | None,
    steps: int | None,
    spo2: float | None,
    skin_temp: float | None,
    resp_rate: float | None,
    device: str,
    seq: int,
    env: Env | None,
) -> Frame:
    """The frame ``Frame(ts, hr, ..., env)`` of all ten fields in their order, built about
    twice as fast: for code that builds frames in bulk (wire parsing, payload decoding).

    The result is an ordinary :class:`Frame` (equal, hashed and printed alike); like the
    dataclass's ``__init__``, it checks nothing.
    """
    frame: Frame = _new_object(Frame)
    _set_ts(frame, ts)
    _set_hr(frame, hr)
    _set_hrv(frame, hrv)
    _set_steps(frame, steps)
    _set_spo2(frame, spo2)
    _set_skin_temp(frame, skin_temp)
    _set_resp_rate(frame, resp_rate)
    _set_device(frame, device)
    _set_seq(frame, seq)
    _set_env(frame, env)
    return frame


@dataclass(frozen=True, slots=True)
class Profile:
    """A user's coach persona, base avatar and tier; stored with the user's state."""

    style: CoachStyle = CoachStyle.ENCOURAGING
    tone: CoachTone = CoachTone.GENTLE
    base_avatar: str = "fox"
    tier: str = "free"
    """The name of the user's tier (:mod:`brain.tiers`); an unknown name reads as the default."""


@dataclass(frozen=True, slots=True)
class Assessment:
    """What an analysis decided about a user's window of frames.

    ``health`` is what :func:`brain.health.compute_health` found in the user's stored days
    and this window (fatigue, stress, sleep, HRV trend), when the caller computed it; it
    describes the user, not the decision, so it never changes ``state``, ``mood`` or
    ``energy``.
    """

    state: State
    mood: Mood
    energy: int
    reasoning: str
    actions: tuple[Action, ...] = field(default_factory=tuple)
    source: Source = Source.RULES
    health: HealthMetrics | None = None

    @property
    def band(self) -> EnergyBand:
        return EnergyBand.of(self.energy)


@dataclass(frozen=True, slots=True)
class StateField:
    """One field of a user's state record: its name, JSON Schema, and whether devices show it.

    ``visible`` fields are the ones the state hash covers and deltas carry; the others
    (identity, version, hash, time) describe the record itself.
    """

    name: str
    schema: Mapping[str, Any]
    visible: bool


def _choice(values: type[StrEnum]) -> dict[str, Any]:
    return {"type": "string", "enum": [member.value for member in values]}


USER_STATE_FIELDS: Final[tuple[StateField, ...]] = (
    StateField("user_id", {"type": "string"}, visible=False),
    StateField("version", {"type": "integer", "minimum": 0}, visible=False),
    StateField("state_hash", {"type": "string"}, visible=False),
    StateField("state", _choice(State), visible=True),
    StateField("mood", _choice(Mood), visible=True),
    StateField("energy", {"type": "integer", "minimum": 0, "maximum": 100}, visible=True),
    StateField("reasoning", {"type": "string"}, visible=True),
    StateField("actions", {"type": "array", "items": {"type": "string"}}, visible=True),
    StateField("source", _choice(Source), visible=True),
    StateField("image_url", {"type": ["string", "null"]}, visible=True),
    StateField("avatar_status", _choice(AvatarStatus), visible=True),
    StateField("video_url", {"type": ["string", "null"]}, visible=True),
    StateField("video_status", _choice(AvatarStatus), visible=True),
    StateField(
        "health",
        {
            "type": ["object", "null"],
            "description": "health metrics (brain.health) as of this version; null: none yet",
            "properties": {
                "fatigue_score": {"type": ["integer", "null"], "minimum": 0, "maximum": 100},
                "stress_level": {"enum": ["low", "moderate", "high", None]},
                "stress_score": {"type": ["integer", "null"], "minimum": 0, "maximum": 100},
                "sleep_hours": {"type": "array", "items": {"type": "number"}, "maxItems": 3},
                "hrv_trend": {"type": "array", "items": {"type": "number"}, "maxItems": 3},
                "energy_budget": {"type": ["integer", "null"], "minimum": 0, "maximum": 100},
            },
        },
        visible=True,
    ),
    StateField("updated_at", {"type": "integer", "description": "epoch ms"}, visible=False),
)
"""THE list of a user's state fields, in wire order. The snapshot (``server.protocol``), the
state hash (:mod:`brain.hashing`), the store codec, the legacy shapes and the OpenAPI schema
all derive from it; a new field is added here and nowhere else."""

VISIBLE_FIELDS: Final[tuple[str, ...]] = tuple(f.name for f in USER_STATE_FIELDS if f.visible)
"""The fields devices display; the state hash covers these and no other."""

SNAPSHOT_FIELDS: Final[tuple[str, ...]] = tuple(f.name for f in USER_STATE_FIELDS)
"""Every field of the state record, in wire order (what a ``snapshot`` carries)."""
