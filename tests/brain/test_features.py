"""Features of a window: HR level and slopes, HRV against baseline, steps, environment, keys."""

from __future__ import annotations

import random

import pytest

from brain.features import (
    Baseline,
    compute_baseline,
    compute_features,
    local_hour,
    rounded,
    trend,
)
from brain.model import Env, Frame
from brain.scenarios import generate, history

MIN = 60_000
T0 = 1_700_006_400_000  # 2023-11-15 00:00 UTC
NOW = T0 + 15 * MIN


def series(
    hr: object = None, *, every_s: int = 30, minutes: int = 15, **fields: object
) -> list[Frame]:
    """Frames over ``minutes``, one per ``every_s``; callables get the minute since start."""
    out = []
    for i in range(minutes * 60 // every_s + 1):
        t = i * every_s / 60
        values = {k: (v(t) if callable(v) else v) for k, v in {"hr": hr, **fields}.items()}
        out.append(Frame(ts=T0 + int(t * MIN), **values))  # type: ignore[arg-type]
    return out


def test_an_hr_climbing_2_bpm_per_minute_has_a_slope_of_2() -> None:
    f = compute_features(series(lambda t: 70 + 2 * t), now_ms=NOW, baseline=None)
    assert f.hr_slope == pytest.approx(2.0)
    assert f.hr_slope_recent == pytest.approx(2.0)
    assert f.hr_mean == pytest.approx(85.0)
    assert f.hr_last == pytest.approx(100.0)


def test_the_recent_slope_sees_a_rise_in_the_last_five_minutes_only() -> None:
    f = compute_features(series(lambda t: 70 + max(0.0, t - 10) * 3), now_ms=NOW, baseline=None)
    assert f.hr_slope_recent == pytest.approx(3.0)
    assert f.hr_slope is not None and f.hr_slope < 1.5


def test_noise_does_not_hide_a_slope() -> None:
    rng = random.Random(1)
    f = compute_features(series(lambda t: 70 + 2 * t + rng.gauss(0, 2)), now_ms=NOW, baseline=None)
    assert f.hr_slope == pytest.approx(2.0, abs=0.3)


def test_no_slope_from_too_few_frames_or_less_than_a_minute() -> None:
    two = compute_features(series(70, minutes=1, every_s=60), now_ms=NOW, baseline=None)
    quick = [Frame(ts=T0 + i * 10_000, hr=70.0 + i) for i in range(6)]  # six over 50 s
    short = compute_features(quick, now_ms=NOW, baseline=None)
    assert two.hr_slope is None
    assert short.hr_slope is None


def test_hrv_and_hr_are_compared_with_the_baseline() -> None:
    baseline = Baseline(resting_hr=60.0, hrv=50.0, hrv_trend=0.9, frames=100)
    f = compute_features(series(72, hrv=25.0), now_ms=NOW, baseline=baseline)
    assert f.hrv_mean == pytest.approx(25.0)
    assert f.hrv_ratio == pytest.approx(0.5)
    assert f.hr_over_rest == pytest.approx(12.0)
    assert f.hrv_trend == pytest.approx(0.9)


def test_without_a_baseline_there_is_no_ratio() -> None:
    f = compute_features(series(72, hrv=25.0), now_ms=NOW, baseline=None)
    assert f.hrv_ratio is None and f.hr_over_rest is None


def test_steps_per_minute_are_steps_over_the_span_and_recently() -> None:
    frames = series(100, steps=lambda t: 60 if t > 10 else 0)  # 120/min for the last 5 minutes
    f = compute_features(frames, now_ms=NOW, baseline=None)
    assert f.steps_per_min == pytest.approx(120 * 5 / 15)
    assert f.steps_per_min_recent == pytest.approx(120.0)


def test_no_step_rate_when_no_frame_counts_steps() -> None:
    assert compute_features(series(70), now_ms=NOW, baseline=None).steps_per_min is None


def test_environment_is_the_latest_and_altitude_gain_is_over_the_window() -> None:
    def env(t: float) -> Env:
        weather = "clear" if t < 14 else None  # a late frame without weather keeps the last one
        return Env(altitude_m=1500 + 10 * t, temp_c=15 - t / 10, speed_mps=1.2, weather=weather)

    f = compute_features(series(110, env=env), now_ms=NOW, baseline=None)
    assert f.altitude_m == pytest.approx(1650.0)
    assert f.altitude_gain_m == pytest.approx(150.0)
    assert f.temp_c == pytest.approx(13.5)
    assert f.speed_mps == pytest.approx(1.2)
    assert f.weather == "clear"


def test_spo2_skin_temperature_and_breathing_are_window_means() -> None:
    f = compute_features(
        series(70, spo2=lambda t: 96 if t < 7.5 else 98, skin_temp=33.5, resp_rate=14.0),
        now_ms=NOW,
        baseline=None,
    )
    assert f.spo2 == pytest.approx(97.0, abs=0.1)
    assert (f.skin_temp, f.resp_rate) == (pytest.approx(33.5), pytest.approx(14.0))


def test_frame_order_does_not_change_the_features() -> None:
    frames = generate("stress", start_ms=T0, minutes=15)
    shuffled = frames[:]
    random.Random(3).shuffle(shuffled)
    base = compute_baseline(history("healthy", end_ms=T0))
    assert compute_features(shuffled, now_ms=NOW, baseline=base) == compute_features(
        frames, now_ms=NOW, baseline=base
    )


def test_no_frames_give_a_count_of_zero_and_no_values() -> None:
    f = compute_features([], now_ms=NOW, baseline=None)
    assert (f.count, f.span_ms, f.hr_mean, f.steps_per_min) == (0, 0, None, None)


def test_count_and_span_describe_the_frames() -> None:
    f = compute_features(series(70), now_ms=NOW, baseline=None)
    assert (f.count, f.span_min) == (31, 15.0)


@pytest.mark.parametrize(("offset_min", "hour"), [(0, 0), (120, 2), (-60, 23), (330, 5)])
def test_local_hour_follows_the_users_utc_offset(offset_min: int, hour: int) -> None:
    assert local_hour(T0 + 15 * MIN, offset_min) == hour
    f = compute_features([], now_ms=T0 + 15 * MIN, baseline=None, tz_offset_min=offset_min)
    assert f.local_hour == hour


def test_baseline_uses_resting_frames_for_hr_and_all_frames_for_hrv() -> None:
    rest = [Frame(ts=T0 + i * MIN, hr=58.0 + i % 3, hrv=60.0, steps=0) for i in range(30)]
    workout = [Frame(ts=T0 + (30 + i) * MIN, hr=150.0, hrv=20.0, steps=300) for i in range(10)]
    baseline = compute_baseline(rest + workout)
    assert baseline.resting_hr == pytest.approx(59.0)
    assert baseline.hrv == pytest.approx(60.0)
    assert baseline.frames == 40


def test_a_burnout_history_has_a_falling_hrv_trend_and_a_healthy_one_does_not() -> None:
    healthy = compute_baseline(history("healthy", end_ms=T0))
    burnout = compute_baseline(history("burnout", end_ms=T0))
    assert healthy.hrv_trend == pytest.approx(1.0, abs=0.1)
    assert burnout.hrv_trend is not None and burnout.hrv_trend < 0.8
    assert healthy.resting_hr is not None and burnout.resting_hr is not None
    assert burnout.resting_hr > healthy.resting_hr


def test_an_empty_history_gives_an_empty_baseline() -> None:
    assert compute_baseline([]) == Baseline(resting_hr=None, hrv=None, hrv_trend=None, frames=0)


def test_rounding_ignores_sensor_noise_but_not_a_real_change() -> None:
    def key(seed: int, kind: str = "calm") -> dict[str, object]:
        frames = generate(kind, start_ms=T0, minutes=15, seed=seed)
        return rounded(compute_features(frames, now_ms=NOW, baseline=None))

    assert key(0) == key(0)
    assert key(0, "stress") != key(0, "calm")
    assert key(0, "flight") == key(1, "flight")


def test_trend_buckets_frames_per_minute_oldest_first_and_skips_gaps() -> None:
    frames = [
        Frame(ts=NOW - 3 * MIN + 10_000, hr=80.0, hrv=30.0, steps=5),
        Frame(ts=NOW - 3 * MIN + 40_000, hr=90.0, hrv=40.0, steps=5),
        Frame(ts=NOW - 30_000, hr=100.0, steps=1),
        Frame(ts=NOW - 20 * MIN, hr=60.0),  # outside the 15 minutes
    ]
    points = trend(frames, now_ms=NOW)
    assert [(p.minute, p.hr, p.hrv, p.steps) for p in points] == [
        (2, 85.0, 35.0, 10),
        (0, 100.0, None, 1),
    ]
