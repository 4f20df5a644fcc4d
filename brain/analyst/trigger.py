"""When a window is worth Claude's time: :func:`should_trigger`, and the memory it needs.

The analysis runs after every burst of frames, dozens of times an hour per streaming user;
the rules answer each in microseconds, the LLM in a second and for a fraction of a cent.
The LLM adds words and judgement, not a different reading of the same numbers, so it is
asked only when something happened since it was last asked:

- **first**: it was never asked about this user (since this node started), and the rules
  disagree with the state the user is in (after a restart, a user whose state still holds
  costs nothing);
- **state_change**: the rules' candidate state differs from the one they saw when the LLM
  was last asked: a candidate change of state;
- **new_situation**: same candidate state, but the situation moved: another energy band or
  another place (altitude band of 1,000 m, temperature band of 10 °C, weather, moving or
  not), and the last call is at least :attr:`TriggerCaps.situation_after_ms` old (entering
  a new place often comes with a change of state a few minutes later: one call, not two);
- **refresh**: nothing moved for :attr:`TriggerCaps.refresh_after_ms` (the reasoning and
  advice would otherwise stay hours old).

Whatever the reason, a user gets at most :attr:`TriggerCaps.per_hour` calls in any hour and
:attr:`TriggerCaps.per_day` in any 24 hours (rolling windows). The situation is compared
with the one of the last call, not of the last window, so a slow drift is noticed once it
adds up and a value flickering at a band edge costs one call per cap period at most.

Everything here is pure: :func:`should_trigger` takes the memory and returns a verdict,
:meth:`TriggerMemory.asked` returns the memory after a call. :class:`TriggerGate` keeps the
memories of many users, bounded.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace
from enum import StrEnum

from brain.features import Features
from brain.model import Assessment, EnergyBand, State

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


class TriggerReason(StrEnum):
    """Why the LLM is asked, or why not."""

    FIRST = "first"
    STATE_CHANGE = "state_change"
    NEW_SITUATION = "new_situation"
    REFRESH = "refresh"
    SAME = "same"
    HOURLY_CAP = "hourly_cap"
    DAILY_CAP = "daily_cap"
    NO_DATA = "no_data"


ASKING = frozenset(
    {
        TriggerReason.FIRST,
        TriggerReason.STATE_CHANGE,
        TriggerReason.NEW_SITUATION,
        TriggerReason.REFRESH,
    }
)
"""The reasons that send a window to the LLM."""


@dataclass(frozen=True, slots=True)
class TriggerCaps:
    """How often one user's windows may reach the LLM (a tier's allowance)."""

    per_hour: int = 4
    per_day: int = 24
    situation_after_ms: int = HOUR_MS
    refresh_after_ms: int = 4 * HOUR_MS

    def __post_init__(self) -> None:
        if min(self.per_hour, self.per_day, self.situation_after_ms) < 0:
            raise ValueError(f"caps and intervals must be >= 0, got {self}")
        if self.refresh_after_ms <= 0:
            raise ValueError(f"the refresh interval must be positive, got {self}")


@dataclass(frozen=True, slots=True)
class Situation:
    """A window in coarse words: what has to change for the LLM to be asked again."""

    state: State
    energy: EnergyBand
    place: tuple[int | None, int | None, str | None, bool]

    @classmethod
    def of(cls, features: Features, candidate: Assessment) -> Situation:
        """The situation of a window, from its features and the rules' assessment.

        Activity (still, walking, running) is not part of it: the state says it already.
        """
        altitude = None if features.altitude_m is None else int(features.altitude_m // 1000)
        temp = None if features.temp_c is None else int(features.temp_c // 10)
        moving = (features.speed_mps or 0.0) >= 2.0
        return cls(
            state=candidate.state,
            energy=candidate.band,
            place=(altitude, temp, features.weather, moving),
        )


@dataclass(frozen=True, slots=True)
class TriggerMemory:
    """What :func:`should_trigger` remembers of one user between windows.

    ``situation`` is that of the last call (``None``: never asked), ``calls_ms`` the times
    of the calls in the last 24 hours, ``answer`` the LLM's last assessment (kept by the
    caller, who answers with it while the LLM is not asked).
    """

    situation: Situation | None = None
    calls_ms: tuple[int, ...] = ()
    last_ms: int | None = None
    answer: Assessment | None = None

    def asked(
        self, situation: Situation, now_ms: int, answer: Assessment | None = None
    ) -> TriggerMemory:
        """The memory after asking the LLM about ``situation`` at ``now_ms`` (``answer``
        ``None`` when it failed: the call still counts, the last answer stays)."""
        recent = tuple(t for t in self.calls_ms if t > now_ms - DAY_MS)
        return TriggerMemory(
            situation=situation,
            calls_ms=(*recent, now_ms),
            last_ms=now_ms,
            answer=self.answer if answer is None else answer,
        )

    def seen(self, situation: Situation) -> TriggerMemory:
        """The memory after a window that agreed with the state the user is in, with no
        call (so later windows compare with it)."""
        return replace(self, situation=situation)


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether to ask the LLM about a window, why, and the window's situation."""

    ask: bool
    reason: TriggerReason
    situation: Situation | None


def should_trigger(
    features: Features,
    current_state: State | None,
    *,
    candidate: Assessment,
    memory: TriggerMemory,
    now_ms: int,
    caps: TriggerCaps = TriggerCaps(),  # frozen, so one default for all is safe
) -> Verdict:
    """Whether the window with ``features`` is worth an LLM call; see the module docstring.

    ``current_state`` is the user's committed state (``None`` before any), ``candidate``
    the rules' assessment of the window, ``memory`` what was remembered of the user.
    """
    if features.count == 0:
        return Verdict(False, TriggerReason.NO_DATA, None)
    situation = Situation.of(features, candidate)
    if memory.situation is None:
        if current_state is not None and candidate.state == current_state:
            return Verdict(False, TriggerReason.SAME, situation)
        reason = TriggerReason.FIRST
    elif situation.state != memory.situation.state:
        reason = TriggerReason.STATE_CHANGE
    else:
        since = None if memory.last_ms is None else now_ms - memory.last_ms
        if situation != memory.situation and (since is None or since >= caps.situation_after_ms):
            reason = TriggerReason.NEW_SITUATION
        elif since is None or since >= caps.refresh_after_ms:
            reason = TriggerReason.REFRESH
        else:
            return Verdict(False, TriggerReason.SAME, situation)
    if sum(1 for t in memory.calls_ms if t > now_ms - DAY_MS) >= caps.per_day:
        return Verdict(False, TriggerReason.DAILY_CAP, situation)
    if sum(1 for t in memory.calls_ms if t > now_ms - HOUR_MS) >= caps.per_hour:
        return Verdict(False, TriggerReason.HOURLY_CAP, situation)
    return Verdict(True, reason, situation)


class TriggerGate:
    """The :class:`TriggerMemory` of up to ``max_users`` users (least recently seen out).

    One node holds a user's memory: each user's analysis has one owner in the cluster. A
    memory lost (evicted, restarted) costs at most one call, when the rules disagree with
    the committed state.
    """

    def __init__(self, caps: TriggerCaps = TriggerCaps(), *, max_users: int = 100_000) -> None:
        if max_users < 1:
            raise ValueError(f"max_users must be positive, got {max_users}")
        self.caps = caps
        self._max_users = max_users
        self._memories: OrderedDict[str, TriggerMemory] = OrderedDict()

    def memory(self, user_id: str) -> TriggerMemory:
        """What is remembered of ``user_id`` (empty when nothing)."""
        return self._memories.get(user_id, TriggerMemory())

    def check(
        self,
        user_id: str,
        features: Features,
        current_state: State | None,
        candidate: Assessment,
        now_ms: int,
    ) -> Verdict:
        """:func:`should_trigger` with the user's memory; a window that agrees with the
        user's state is remembered as seen."""
        memory = self.memory(user_id)
        verdict = should_trigger(
            features,
            current_state,
            candidate=candidate,
            memory=memory,
            now_ms=now_ms,
            caps=self.caps,
        )
        if memory.situation is None and verdict.situation is not None and not verdict.ask:
            self._put(user_id, memory.seen(verdict.situation))
        return verdict

    def asked(
        self, user_id: str, situation: Situation, now_ms: int, answer: Assessment | None
    ) -> None:
        """Remember that the LLM was asked about ``situation`` (``answer`` ``None``: failed)."""
        self._put(user_id, self.memory(user_id).asked(situation, now_ms, answer))

    def forget(self, user_id: str) -> None:
        """Drop the user's memory (after an erase)."""
        self._memories.pop(user_id, None)

    def _put(self, user_id: str, memory: TriggerMemory) -> None:
        self._memories[user_id] = memory
        self._memories.move_to_end(user_id)
        while len(self._memories) > self._max_users:
            self._memories.popitem(last=False)
