"""Health metrics in the seeds' shape: fatigue score, stress level, sleep hours, HRV trend
and the day's energy budget, from a user's stored days of frames and the current window.

The seeds ask a SageMaker model for a fatigue prediction; here it is a transparent formula
whose every term a user can check (:func:`fatigue_score`). Two steps, both pure:

1. :func:`daily_aggregates` condenses about 14 days of frames (the same frames the baseline
   is made of) into one :class:`DayAggregate` per local calendar day: the day's mean RMSSD,
   its resting heart rate and the hours slept in the night that ended that morning
   (:func:`settled` leaves out the day still going on, but for its night).
2. :func:`compute_health` turns those days and, when there is one, the window's
   :class:`~brain.features.Features` into :class:`HealthMetrics`.

The sleep rule (:func:`asleep_minutes`): frames have no posture sensor, so "lying still" is
read as "no steps". A frame counts as asleep when it is taken between 20:00 and 12:00 local
time, has no steps, and its heart rate is at most :data:`SLEEP_HR_MARGIN` bpm above the
night's low (the 10th percentile of the night's heart rates); each asleep frame counts the
time to the next frame, at most :data:`MAX_FRAME_GAP_MIN` minutes (a gap in the data is not
sleep). A night belongs to the day it ends on (22:00 Monday-07:00 Tuesday is Tuesday's),
and counts only once it has a frame from :data:`NIGHT_COUNTS_FROM_HOUR` on that morning: an
evening alone (or the first hours after midnight) is a night still going on, not a short one.

Nothing here does I/O or reads a clock; thin data gives ``None`` fields, never an error.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from statistics import fmean, median, quantiles
from typing import Any, Literal

from brain.features import RESTING_STEPS_PER_FRAME, Features
from brain.model import TIME_ORDER, Frame

StressLevel = Literal["low", "moderate", "high"]
"""The seeds' ``stress_level`` words."""

DAYS_SHOWN = 3
"""Days in ``hrv_trend`` and ``sleep_hours``: the seeds show the last three."""

NIGHT_STARTS_HOUR = 20
NIGHT_ENDS_HOUR = 12
"""Local hours between which a still, low-heart-rate frame may count as sleep."""

SLEEP_HR_MARGIN = 8.0
"""Beats per minute above the night's low that still count as asleep (sitting up awake
runs about 10 bpm above sleeping)."""

NIGHT_COUNTS_FROM_HOUR = 4
"""The local hour of its morning from which a night's frames say how it went."""

MAX_FRAME_GAP_MIN = 15.0
"""The most minutes one asleep frame stands for: a longer gap is missing data, not sleep."""

RECENT_DAYS = 3
"""The days compared with the ones before them for the HRV and resting-HR terms."""

HEALTHY_SLEEP_HOURS = 7.5
"""A night this long or longer adds nothing to fatigue."""


@dataclass(frozen=True, slots=True)
class DayAggregate:
    """One local calendar day (``YYYY-MM-DD``) of a user's frames.

    ``hrv`` is the mean RMSSD of the day's frames, ``resting_hr`` the median heart rate of its
    frames with at most :data:`~brain.features.RESTING_STEPS_PER_FRAME` steps, and
    ``sleep_hours`` the sleep of the night that ended that day (``None``: no night frames).
    """

    day: str
    hrv: float | None
    resting_hr: float | None
    sleep_hours: float | None
    frames: int


@dataclass(frozen=True, slots=True)
class HealthMetrics:
    """What :func:`compute_health` found; ``None`` where the data was too thin.

    ``hrv_trend`` and ``sleep_hours`` hold the last :data:`DAYS_SHOWN` days, oldest first
    (the seeds' ``[60, 58, 55]``); ``fatigue_score``, ``stress_score`` and ``energy_budget``
    are 0-100.
    """

    fatigue_score: int | None
    stress_level: StressLevel | None
    stress_score: int | None
    sleep_hours: tuple[float, ...]
    hrv_trend: tuple[float, ...]
    energy_budget: int | None

    def to_dict(self) -> dict[str, Any]:
        """Every metric, JSON-ready (what the assessment's ``health`` carries)."""
        return {
            "fatigue_score": self.fatigue_score,
            "stress_level": self.stress_level,
            "stress_score": self.stress_score,
            "sleep_hours": list(self.sleep_hours),
            "hrv_trend": list(self.hrv_trend),
            "energy_budget": self.energy_budget,
        }

    def health_metrics(self) -> dict[str, Any]:
        """The seeds' ``health_metrics`` object: ``{hrv_trend, sleep_hours, stress_level}``."""
        return {
            "hrv_trend": list(self.hrv_trend),
            "sleep_hours": list(self.sleep_hours),
            "stress_level": self.stress_level,
        }

    @property
    def known(self) -> bool:
        """Whether any metric is known (thin data leaves them all ``None`` or empty)."""
        return any(
            value not in (None, ())
            for value in (
                self.fatigue_score,
                self.stress_level,
                self.stress_score,
                self.sleep_hours,
                self.hrv_trend,
                self.energy_budget,
            )
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HealthMetrics:
        """The metrics :meth:`to_dict` made ``data`` from (a key it lacks reads as unknown).

        Raises :class:`ValueError` for a value of the wrong kind or out of range.
        """
        level = data.get("stress_level")
        if level is not None and level not in _STRESS_LEVELS:
            raise ValueError(f"stress_level must be one of {_STRESS_LEVELS}, got {level!r}")
        return cls(
            fatigue_score=_score(data.get("fatigue_score"), "fatigue_score"),
            stress_level=level,
            stress_score=_score(data.get("stress_score"), "stress_score"),
            sleep_hours=_days(data.get("sleep_hours"), "sleep_hours"),
            hrv_trend=_days(data.get("hrv_trend"), "hrv_trend"),
            energy_budget=_score(data.get("energy_budget"), "energy_budget"),
        )


def days_moved(before: HealthMetrics | None, after: HealthMetrics) -> bool:
    """Whether ``after`` tells of other days than ``before``: another fatigue score, sleep
    or HRV trend (they come from stored days, so they move at most when the days are read
    again). The window's stress is left out: it moves with every frame, and is kept with
    the state when something else changes (see docs/health.md)."""
    if before is None:
        return after.known
    return (before.fatigue_score, before.sleep_hours, before.hrv_trend) != (
        after.fatigue_score,
        after.sleep_hours,
        after.hrv_trend,
    )


_STRESS_LEVELS: tuple[StressLevel, ...] = ("low", "moderate", "high")


def _score(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
        raise ValueError(f"{name} must be a whole number 0..100, got {value!r}")
    return value


def _days(value: Any, name: str) -> tuple[float, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple) or len(value) > DAYS_SHOWN:
        raise ValueError(f"{name} must be a list of at most {DAYS_SHOWN} numbers")
    numbers = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int | float) or not item >= 0:
            raise ValueError(f"{name} must hold numbers >= 0, got {item!r}")
        numbers.append(float(item))
    return tuple(numbers)


_MORNING = range(NIGHT_COUNTS_FROM_HOUR, NIGHT_ENDS_HOUR)


def daily_aggregates(frames: Iterable[Frame], *, tz_offset_min: int = 0) -> list[DayAggregate]:
    """One :class:`DayAggregate` per local day that has frames or a night, oldest first."""
    ordered = sorted(frames, key=TIME_ORDER)
    by_day: dict[str, list[Frame]] = defaultdict(list)
    by_night: dict[str, list[Frame]] = defaultdict(list)
    for frame in ordered:
        local = _local(frame.ts, tz_offset_min)
        by_day[local.date().isoformat()].append(frame)
        if local.hour >= NIGHT_STARTS_HOUR or local.hour < NIGHT_ENDS_HOUR:
            # 12 hours on puts 20:00-11:59 on the morning's date.
            by_night[(local + timedelta(hours=12)).date().isoformat()].append(frame)
    days = []
    for day in sorted(by_day.keys() | by_night.keys()):
        of_day = by_day.get(day, [])
        hrv = [f.hrv for f in of_day if f.hrv is not None]
        resting = [
            f.hr for f in of_day if f.hr is not None and (f.steps or 0) <= RESTING_STEPS_PER_FRAME
        ]
        night = by_night.get(day)
        if night and _local(night[-1].ts, tz_offset_min).hour not in _MORNING:
            night = None  # still going on
        days.append(
            DayAggregate(
                day=day,
                hrv=round(fmean(hrv), 1) if hrv else None,
                resting_hr=round(median(resting), 1) if resting else None,
                sleep_hours=round(asleep_minutes(night) / 60, 1) if night else None,
                frames=len(of_day),
            )
        )
    return days


def settled(
    days: Sequence[DayAggregate], now_ms: int, *, tz_offset_min: int = 0
) -> list[DayAggregate]:
    """``days`` as they stand at ``now_ms``: the current day's HRV and resting heart rate
    are left out (a day's mean moves until the day ends: its night runs high, its workout
    low), its night is kept (:func:`daily_aggregates` counts only a night that is over)."""
    today = _local(now_ms, tz_offset_min).date().isoformat()
    return [replace(day, hrv=None, resting_hr=None) if day.day >= today else day for day in days]


def asleep_minutes(night: Sequence[Frame]) -> float:
    """Minutes asleep in one night's frames (oldest first); see the module's sleep rule."""
    rates = [f.hr for f in night if f.hr is not None]
    if not rates:
        return 0.0
    low = quantiles(rates, n=10)[0] if len(rates) >= 2 else rates[0]
    ceiling = low + SLEEP_HR_MARGIN
    minutes = 0.0
    for frame, after in pairwise(night):
        still = not frame.steps and frame.hr is not None and frame.hr <= ceiling
        if still:
            minutes += min((after.ts - frame.ts) / 60_000, MAX_FRAME_GAP_MIN)
    return minutes


def compute_health(
    days: Sequence[DayAggregate], features: Features | None = None, *, shown: int = DAYS_SHOWN
) -> HealthMetrics:
    """The health metrics of ``days`` (oldest first) and the current window's ``features``."""
    hrv_trend = tuple(d.hrv for d in days if d.hrv is not None)[-shown:]
    sleep = tuple(d.sleep_hours for d in days if d.sleep_hours is not None)[-shown:]
    stress = stress_score(features) if features is not None else None
    fatigue = fatigue_score(days)
    return HealthMetrics(
        fatigue_score=fatigue,
        stress_level=stress_level(stress) if stress is not None else None,
        stress_score=stress,
        sleep_hours=sleep,
        hrv_trend=hrv_trend,
        energy_budget=energy_budget(fatigue, stress),
    )


def fatigue_score(days: Sequence[DayAggregate]) -> int | None:
    """Fatigue 0-100 from stored days: the seeds' SageMaker prediction as a formula.

    - HRV (up to 45): the mean RMSSD of the last :data:`RECENT_DAYS` days against the median
      of the days before; 40 % below it or lower scores all 45.
    - Sleep (up to 35): last night's hours short of :data:`HEALTHY_SLEEP_HOURS`; 3 hours
      scores all 35.
    - Load (up to 20): the resting heart rate of the recent days above that of the days
      before; 10 bpm or more scores all 20 (the heart works harder at rest under strain).

    ``None`` when there is neither an HRV comparison nor a night to go by.
    """
    recent, before = days[-RECENT_DAYS:], days[:-RECENT_DAYS]
    hrv_ratio = _ratio([d.hrv for d in recent], [d.hrv for d in before])
    nights = [d.sleep_hours for d in days if d.sleep_hours is not None]
    if hrv_ratio is None and not nights:
        return None
    score = 0.0
    if hrv_ratio is not None:
        score += _clamp((1 - hrv_ratio) / 0.4) * 45
    if nights:
        score += _clamp((HEALTHY_SLEEP_HOURS - nights[-1]) / 4.5) * 35
    recent_hr = [d.resting_hr for d in recent if d.resting_hr is not None]
    before_hr = [d.resting_hr for d in before if d.resting_hr is not None]
    if recent_hr and before_hr:
        score += _clamp((fmean(recent_hr) - median(before_hr)) / 10) * 20
    return round(score)


def stress_score(f: Features) -> int | None:
    """Acute stress 0-100 from the window: heart rate up without movement, HRV down,
    fast breathing.

    - Heart rate (up to 50): the recent HR above the resting HR, 30 bpm scoring all 50; left
      out while the user moves (20+ steps a minute: that rise is exercise, not stress).
    - HRV (up to 35): the window's RMSSD below the baseline; half of it scores all 35.
    - Breathing (up to 15): above 16 breaths a minute; 24 scores all 15.

    ``None`` without a baseline to hold the heart rate or the HRV against (a user's first
    hours): breathing alone does not tell stress.
    """
    over_rest = f.hr_recent_over_rest if f.hr_recent_over_rest is not None else f.hr_over_rest
    steps = f.steps_per_min_recent if f.steps_per_min_recent is not None else f.steps_per_min
    if over_rest is None and f.hrv_ratio is None:
        return None
    score = 0.0
    if over_rest is not None and (steps or 0) < 20:
        score += _clamp(over_rest / 30) * 50
    if f.hrv_ratio is not None:
        score += _clamp((1 - f.hrv_ratio) / 0.5) * 35
    if f.resp_rate is not None:
        score += _clamp((f.resp_rate - 16) / 8) * 15
    return round(score)


def stress_level(score: int) -> StressLevel:
    """The seeds' word for a stress score: low below 34, high from 67, moderate between."""
    if score < 34:
        return "low"
    return "high" if score >= 67 else "moderate"


def energy_budget(fatigue: int | None, stress: int | None) -> int | None:
    """The day's energy budget 0-100 ("spoon theory"): what fatigue leaves, less what
    acute stress spends. ``None`` when both are unknown."""
    if fatigue is None and stress is None:
        return None
    return round(100 - 0.7 * (fatigue or 0) - 0.3 * (stress or 0))


def _ratio(recent: Iterable[float | None], before: Iterable[float | None]) -> float | None:
    """Mean of ``recent`` over the median of ``before``; ``None`` when either is empty."""
    now = [v for v in recent if v is not None]
    then = [v for v in before if v is not None]
    if not now or not then or median(then) <= 0:
        return None
    return fmean(now) / median(then)


def _local(ts_ms: int, tz_offset_min: int) -> datetime:
    return datetime.fromtimestamp(ts_ms / 1000, UTC) + timedelta(minutes=tz_offset_min)


def _clamp(value: float) -> float:
    return min(max(value, 0.0), 1.0)
