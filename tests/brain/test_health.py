"""Health metrics: the sleep and burnout scenarios move them as a person would expect."""

from __future__ import annotations

from dataclasses import replace

import pytest

from brain.features import compute_baseline, compute_features
from brain.health import (
    DayAggregate,
    asleep_minutes,
    compute_health,
    daily_aggregates,
    energy_budget,
    fatigue_score,
    settled,
    stress_level,
    stress_score,
)
from brain.model import Frame
from brain.scenarios import generate, history

MIN = 60_000
HOUR = 60 * MIN
DAY0 = 1_700_006_400_000  # 2023-11-15 00:00 UTC

HEALTHY = history("healthy", end_ms=DAY0)
BURNOUT = history("burnout", end_ms=DAY0)


def a_night(*, bed_hour: int, wake_hour: int, day_ms: int = DAY0) -> list[Frame]:
    """An evening awake from 20:00 until ``bed_hour``, sleep until ``wake_hour``, then a
    morning awake until 11:00: frames every 30 s, the night ending on ``day_ms``'s date."""
    evening = day_ms - 4 * HOUR
    bed = day_ms + (bed_hour - 24 if bed_hour >= 20 else bed_hour) * HOUR
    wake = day_ms + wake_hour * HOUR
    awake_before = generate("calm", start_ms=evening, minutes=(bed - evening) / MIN, seed=1)
    # Hour by hour: the sleep scenario's slow HR drift is meant for minutes, not a night.
    asleep = [
        frame
        for hour in range((wake - bed) // HOUR)
        for frame in generate("sleep", start_ms=bed + hour * HOUR, minutes=60, seed=hour)
    ]
    morning = generate("calm", start_ms=wake, minutes=(day_ms + 11 * HOUR - wake) / MIN, seed=2)
    return awake_before + asleep + morning


def test_a_full_night_sleeps_about_its_hours() -> None:
    """Bed at 23:00, up at 07:00: eight hours asleep, the calm evening and morning awake."""
    (day,) = [d for d in daily_aggregates(a_night(bed_hour=23, wake_hour=7)) if d.sleep_hours]
    assert day.day == "2023-11-15"
    assert day.sleep_hours == pytest.approx(8.0, abs=0.1)


def test_a_short_night_gives_fewer_sleep_hours() -> None:
    """Bed at 02:00 instead of 23:00: three hours fewer, and more fatigue the next day."""
    day = DAY0 + 24 * HOUR  # the night after the two weeks of history
    full = daily_aggregates(HEALTHY + a_night(bed_hour=23, wake_hour=7, day_ms=day))
    short = daily_aggregates(HEALTHY + a_night(bed_hour=2, wake_hour=7, day_ms=day))
    assert full[-1].sleep_hours is not None and short[-1].sleep_hours is not None
    assert short[-1].sleep_hours == pytest.approx(full[-1].sleep_hours - 3, abs=0.1)
    assert compute_health(short).sleep_hours[-1] < compute_health(full).sleep_hours[-1]
    assert (fatigue_score(short) or 0) > (fatigue_score(full) or 0) + 15


def test_a_night_still_going_on_is_not_counted_as_a_short_one() -> None:
    """Frames up to 03:00 only: the night has no sleep hours yet (not three hours)."""
    night = [f for f in a_night(bed_hour=23, wake_hour=7) if f.ts < DAY0 + 3 * HOUR]
    assert [d.sleep_hours for d in daily_aggregates(night)] == [None, None]


def test_steps_or_a_raised_heart_rate_at_night_are_awake() -> None:
    """A still night counts every frame; steps or 20 bpm over the night's low count none."""
    night = generate("sleep", start_ms=DAY0, minutes=60)
    walking = [replace(f, steps=30) for f in night]
    up = night[:60] + [replace(f, hr=(f.hr or 0) + 20) for f in night[60:]]
    assert asleep_minutes(night) == pytest.approx(59.5)
    assert asleep_minutes(walking) == 0
    assert asleep_minutes(up) == pytest.approx(30.0)


def test_a_gap_in_the_data_is_not_sleep() -> None:
    """Two still frames four hours apart count at most 15 minutes, not four hours."""
    frames = [Frame(ts=DAY0, hr=52, steps=0), Frame(ts=DAY0 + 4 * HOUR, hr=52, steps=0)]
    assert asleep_minutes(frames) == 15


def test_burnout_drives_fatigue_up_and_the_hrv_trend_down() -> None:
    """Two weeks of burnout against two healthy ones: more fatigue, a falling HRV trend,
    less energy for the day; the healthy trend stays flat."""
    healthy = compute_health(daily_aggregates(HEALTHY))
    burnout = compute_health(daily_aggregates(BURNOUT))
    assert healthy.fatigue_score is not None and burnout.fatigue_score is not None
    assert burnout.fatigue_score >= healthy.fatigue_score + 30
    assert len(burnout.hrv_trend) == 3
    assert burnout.hrv_trend[0] > burnout.hrv_trend[-1]
    assert max(burnout.hrv_trend) < min(healthy.hrv_trend)
    assert max(healthy.hrv_trend) - min(healthy.hrv_trend) < 5
    assert burnout.energy_budget is not None and healthy.energy_budget is not None
    assert burnout.energy_budget < healthy.energy_budget


def test_hrv_trend_lists_the_daily_rmssd_means_of_the_last_days() -> None:
    """Days of 60, 58, 55 ms give the seeds' ``[60, 58, 55]``, oldest first."""
    days = [
        Frame(ts=DAY0 + d * 24 * HOUR + 10 * HOUR + i * MIN, hrv=v + (i - 1))
        for d, v in enumerate((70, 60, 58, 55))
        for i in range(3)
    ]
    assert compute_health(daily_aggregates(days)).hrv_trend == (60, 58, 55)


def test_stress_is_high_in_the_stress_scenario_and_low_when_calm_or_exercising() -> None:
    """A stress climb reads high; calm reads low; a run's heart rate is not stress."""
    baseline = compute_baseline(HEALTHY)

    def features(kind: str) -> int | None:
        start = DAY0 + 10 * HOUR
        frames = generate(kind, start_ms=start, minutes=15)
        return stress_score(compute_features(frames, now_ms=start + 15 * MIN, baseline=baseline))

    calm, stress, exercise = features("calm"), features("stress"), features("exercise")
    assert calm is not None and stress is not None and exercise is not None
    assert stress_level(stress) == "high"
    assert stress_level(calm) == "low"
    assert exercise < stress
    health = compute_health(daily_aggregates(HEALTHY), None)
    assert health.stress_level is None  # no window, no acute stress


def test_the_seeds_shape_has_their_three_fields() -> None:
    """``health_metrics()`` is ``{hrv_trend, sleep_hours, stress_level}`` with lists."""
    shape = compute_health(daily_aggregates(HEALTHY)).health_metrics()
    assert set(shape) == {"hrv_trend", "sleep_hours", "stress_level"}
    assert len(shape["hrv_trend"]) == len(shape["sleep_hours"]) == 3


def test_thin_data_gives_none_not_an_error() -> None:
    """No frames: no fatigue, no trend, no budget."""
    empty = compute_health([])
    assert (empty.fatigue_score, empty.hrv_trend, empty.energy_budget) == (None, (), None)
    assert energy_budget(None, 50) == 85


def test_fatigue_terms_each_move_the_score() -> None:
    """Lower recent HRV, a shorter night and a higher resting HR each add fatigue."""
    base = [DayAggregate(f"2023-11-{d:02d}", 60.0, 56.0, 7.5, 100) for d in range(1, 11)]
    low_hrv = base[:-3] + [replace(d, hrv=36.0) for d in base[-3:]]
    short = [*base[:-1], replace(base[-1], sleep_hours=3.0)]
    strained = base[:-3] + [replace(d, resting_hr=66.0) for d in base[-3:]]
    assert fatigue_score(base) == 0
    assert fatigue_score(low_hrv) == 45
    assert fatigue_score(short) == 35
    assert fatigue_score(strained) == 20


def test_the_day_still_going_on_keeps_its_night_but_not_its_hrv() -> None:
    """At 09:00 the night is over (its sleep counts) but the day's mean HRV is only its
    night's: left out until the day ends."""
    days = daily_aggregates(a_night(bed_hour=23, wake_hour=7))
    today = settled(days, DAY0 + 9 * HOUR)
    assert today[-1].sleep_hours == days[-1].sleep_hours is not None
    assert (today[-1].hrv, today[-1].resting_hr) == (None, None)
    assert days[-1].hrv is not None
    assert settled(days, DAY0 + 36 * HOUR) == days  # the next day: it has ended
