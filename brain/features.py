"""Features: the numbers the rules and the LLM reason about, computed from a window of frames.

:func:`compute_features` turns a window (see :mod:`brain.window`) into a :class:`Features`
value: heart-rate level and least-squares slope, HRV against the user's :class:`Baseline`,
step rate, SpO2, skin temperature, breathing rate and the environment. :func:`compute_baseline`
condenses about 14 days of frames into the user's resting heart rate and HRV. :func:`rounded`
coarsens features into a cache key, so near-identical windows share one LLM answer, and
:func:`trend` gives the per-minute means that go to the LLM alongside.

Everything here is pure: no I/O, no clock (``now_ms`` is a parameter), frames in any order.
A field is ``None`` when the frames do not carry enough data to compute it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from statistics import fmean, median
from typing import TypeVar

from brain.model import TIME_ORDER, Frame

RECENT_MS = 5 * 60_000
"""The "recent" part of a window for the short-term slope, rise and step rate: the last 5
minutes, and at most :data:`RECENT_FRAMES` frames."""

RECENT_FRAMES = 11
"""The most frames the recent part holds: at the usual cadence of one frame every 30 s that
is the same 5 minutes; a device that streams every second (or a demo's time-lapse) gets its
last ten seconds, so a new situation shows as soon as it fills them."""

PRIMARY_MIN_FRAMES = 4
"""Heart-rate frames the newest device needs before the features follow it alone."""

MIN_SLOPE_SPAN_MS = 60_000
"""A slope over less than a minute of samples says more about noise than about a trend."""

RESTING_STEPS_PER_FRAME = 5
"""Frames with at most this many steps count towards the resting heart rate of a baseline."""

BASELINE_RECENT_MS = 3 * 24 * 3_600_000
"""The last 3 days of a baseline's frames, compared with the whole to see the HRV trend."""

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Baseline:
    """A user's normal: median resting heart rate and HRV over about 14 days of frames.

    ``hrv_trend`` is the median HRV of the last 3 days over the median of all days: well
    below 1 means HRV has been falling (accumulating fatigue).
    """

    resting_hr: float | None
    hrv: float | None
    hrv_trend: float | None
    frames: int


@dataclass(frozen=True, slots=True)
class Features:
    """What a window of frames says, at ``now_ms``; rates are per minute, slopes in bpm/min.

    The ``*_recent`` fields describe the recent part (:data:`RECENT_MS`, at most
    :data:`RECENT_FRAMES` frames): ``hr_rise_recent`` is the mean HR of its newer half minus
    that of its older half, a rise that needs no minute of samples (unlike a slope).
    """

    now_ms: int
    count: int
    span_ms: int
    local_hour: int
    hr_mean: float | None = None
    hr_last: float | None = None
    hr_slope: float | None = None
    hr_slope_recent: float | None = None
    hr_over_rest: float | None = None
    hr_recent: float | None = None
    hr_recent_over_rest: float | None = None
    hr_rise_recent: float | None = None
    hrv_mean: float | None = None
    hrv_ratio: float | None = None
    hrv_trend: float | None = None
    steps_per_min: float | None = None
    steps_per_min_recent: float | None = None
    spo2: float | None = None
    skin_temp: float | None = None
    resp_rate: float | None = None
    altitude_m: float | None = None
    altitude_gain_m: float | None = None
    temp_c: float | None = None
    humidity_pct: float | None = None
    speed_mps: float | None = None
    weather: str | None = None

    @property
    def span_min(self) -> float:
        """The time between the first and the last frame, in minutes."""
        return self.span_ms / 60_000


@dataclass(frozen=True, slots=True)
class TrendPoint:
    """Means of one minute of frames (``minute`` counts back from now: 0 is the latest)."""

    minute: int
    hr: float | None
    hrv: float | None
    steps: int


def compute_features(
    frames: Iterable[Frame],
    *,
    now_ms: int,
    baseline: Baseline | None,
    tz_offset_min: int = 0,
) -> Features:
    """Compute the features of ``frames`` (any order) at ``now_ms``; never raises on thin data.

    ``tz_offset_min`` is the user's offset from UTC, used only for :attr:`Features.local_hour`.
    """
    ordered = primary(sorted(frames, key=TIME_ORDER))
    hour = local_hour(now_ms, tz_offset_min)
    if not ordered:
        return Features(now_ms=now_ms, count=0, span_ms=0, local_hour=hour)
    recent = [f for f in ordered if f.ts >= now_ms - RECENT_MS][-RECENT_FRAMES:]
    hr = [(f.ts, f.hr) for f in ordered if f.hr is not None]
    hr_recent = [(f.ts, f.hr) for f in recent if f.hr is not None]
    hr_recent_mean = fmean(v for _, v in hr_recent) if hr_recent else None
    hrv = [f.hrv for f in ordered if f.hrv is not None]
    hr_mean = fmean(v for _, v in hr) if hr else None
    hrv_mean = fmean(hrv) if hrv else None
    rest = baseline.resting_hr if baseline else None
    base_hrv = baseline.hrv if baseline else None
    envs = [(f.ts, f.env) for f in ordered if f.env is not None]
    altitudes = [e.altitude_m for _, e in envs if e.altitude_m is not None]
    return Features(
        now_ms=now_ms,
        count=len(ordered),
        span_ms=ordered[-1].ts - ordered[0].ts,
        local_hour=hour,
        hr_mean=hr_mean,
        hr_last=hr[-1][1] if hr else None,
        hr_slope=slope_per_min(hr),
        hr_slope_recent=slope_per_min(hr_recent),
        hr_over_rest=hr_mean - rest if hr_mean is not None and rest is not None else None,
        hr_recent=hr_recent_mean,
        hr_recent_over_rest=(
            hr_recent_mean - rest if hr_recent_mean is not None and rest is not None else None
        ),
        hr_rise_recent=rise([v for _, v in hr_recent]),
        hrv_mean=hrv_mean,
        hrv_ratio=hrv_mean / base_hrv if hrv_mean is not None and base_hrv else None,
        hrv_trend=baseline.hrv_trend if baseline else None,
        steps_per_min=step_rate(ordered),
        steps_per_min_recent=step_rate(recent),
        spo2=_mean(f.spo2 for f in ordered),
        skin_temp=_mean(f.skin_temp for f in ordered),
        resp_rate=_mean(f.resp_rate for f in ordered),
        altitude_m=altitudes[-1] if altitudes else None,
        altitude_gain_m=altitudes[-1] - altitudes[0] if len(altitudes) > 1 else None,
        temp_c=_latest(e.temp_c for _, e in envs),
        humidity_pct=_latest(e.humidity_pct for _, e in envs),
        speed_mps=_latest(e.speed_mps for _, e in envs),
        weather=_latest(e.weather for _, e in envs),
    )


def primary(ordered: Sequence[Frame]) -> Sequence[Frame]:
    """The frames the features follow: those of the device that sent the newest heart rate,
    with the frames of other devices that carry none (a phone's steps, an environment).

    Two devices worn at once disagree on HR by a few bpm (a slope across both is an
    artefact) and both count steps; and a device that takes over (a new watch, an injected
    scenario after a story) is the one that says what the user does now. Until that device
    has :data:`PRIMARY_MIN_FRAMES` heart rates, all frames count.
    """
    with_hr = [f for f in ordered if f.hr is not None]
    if not with_hr:
        return ordered
    device = with_hr[-1].device
    if sum(1 for f in with_hr if f.device == device) < PRIMARY_MIN_FRAMES:
        return ordered
    return [f for f in ordered if f.device == device or f.hr is None]


def rise(values: Sequence[float]) -> float | None:
    """The mean of the newer half of ``values`` (oldest first) minus the mean of the older
    half; ``None`` with fewer than four values."""
    if len(values) < 4:
        return None
    half = len(values) // 2
    return fmean(values[-half:]) - fmean(values[:half])


def compute_baseline(frames: Iterable[Frame]) -> Baseline:
    """The median resting heart rate and median HRV of ``frames`` (about 14 days' worth).

    Resting heart rate uses only frames with few or no steps, so workouts do not raise it.
    """
    ordered = sorted(frames, key=lambda f: f.ts)
    resting = [
        f.hr for f in ordered if f.hr is not None and (f.steps or 0) <= RESTING_STEPS_PER_FRAME
    ]
    hrv = [f.hrv for f in ordered if f.hrv is not None]
    trend = None
    if hrv and ordered:
        recent_from = ordered[-1].ts - BASELINE_RECENT_MS
        recent = [f.hrv for f in ordered if f.hrv is not None and f.ts >= recent_from]
        whole = median(hrv)
        if recent and whole > 0:
            trend = median(recent) / whole
    return Baseline(
        resting_hr=median(resting) if resting else None,
        hrv=median(hrv) if hrv else None,
        hrv_trend=trend,
        frames=len(ordered),
    )


def slope_per_min(points: Sequence[tuple[int, float]]) -> float | None:
    """The least-squares slope of ``(ts_ms, value)`` points in units per minute.

    ``None`` with fewer than three points or when they span less than a minute.
    """
    if len(points) < 3 or points[-1][0] - points[0][0] < MIN_SLOPE_SPAN_MS:
        return None
    t0 = points[0][0]
    xs = [(t - t0) / 60_000 for t, _ in points]
    mx = fmean(xs)
    my = fmean(v for _, v in points)
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (v - my) for x, (_, v) in zip(xs, points, strict=True))
    return sxy / sxx if sxx > 0 else None


def step_rate(frames: Sequence[Frame]) -> float | None:
    """Steps per minute over ``frames`` (oldest first); ``None`` when none carries steps.

    A frame's steps were counted since the previous frame, so the first frame's steps belong
    to the time before the span and are left out: the rate is exact for evenly spaced frames.
    """
    stepped = [f for f in frames if f.steps is not None]
    if len(stepped) < 2:
        return None
    span_ms = stepped[-1].ts - stepped[0].ts
    if span_ms <= 0:
        return None
    return sum(f.steps or 0 for f in stepped[1:]) * 60_000 / span_ms


def trend(frames: Iterable[Frame], *, now_ms: int, minutes: int = 15) -> tuple[TrendPoint, ...]:
    """Per-minute means of heart rate and HRV and sums of steps, oldest first.

    Minutes without frames are left out, so the LLM sees gaps as gaps.
    """
    buckets: dict[int, list[Frame]] = {}
    for frame in frames:
        back = (now_ms - frame.ts) // 60_000
        if 0 <= back < minutes:
            buckets.setdefault(back, []).append(frame)
    return tuple(
        TrendPoint(
            minute=back,
            hr=_round(_mean(f.hr for f in bucket), 1),
            hrv=_round(_mean(f.hrv for f in bucket), 1),
            steps=sum(f.steps or 0 for f in bucket),
        )
        for back, bucket in sorted(buckets.items(), reverse=True)
    )


def rounded(features: Features) -> dict[str, float | int | str | None]:
    """A coarse copy of ``features`` for cache keys: windows alike enough get the same key.

    The steps are chosen so that sensor noise does not change the key but a change the
    rules would notice (a few bpm/min of slope, a tenth of HRV ratio) does.
    """
    f = features
    return {
        "n": min(f.count, 10),  # "enough data" is all that matters past a handful of frames
        "hour": f.local_hour,
        "hr": _step(f.hr_mean, 5),
        "hr_slope": _step(f.hr_slope, 0.5),
        "hr_slope_recent": _step(f.hr_slope_recent, 1),
        "hr_over_rest": _step(f.hr_over_rest, 5),
        "hr_recent": _step(f.hr_recent, 5),
        "hr_rise_recent": _step(f.hr_rise_recent, 2),
        "hrv": _step(f.hrv_mean, 5),
        "hrv_ratio": _step(f.hrv_ratio, 0.1),
        "hrv_trend": _step(f.hrv_trend, 0.1),
        "steps": _step(f.steps_per_min, 10),
        "steps_recent": _step(f.steps_per_min_recent, 10),
        "spo2": _step(f.spo2, 1),
        "skin_temp": _step(f.skin_temp, 0.5),
        "resp": _step(f.resp_rate, 2),
        "alt": _step(f.altitude_m, 100),
        "alt_gain": _step(f.altitude_gain_m, 25),
        "temp": _step(f.temp_c, 2),
        "humidity": _step(f.humidity_pct, 10),
        "speed": _step(f.speed_mps, 0.5),
        "weather": f.weather,
    }


def local_hour(now_ms: int, tz_offset_min: int = 0) -> int:
    """The hour of the day (0-23) at ``now_ms`` in a zone ``tz_offset_min`` from UTC."""
    return ((now_ms // 60_000 + tz_offset_min) // 60) % 24


def _mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return fmean(present) if present else None


def _latest(values: Iterable[_T | None]) -> _T | None:
    latest: _T | None = None
    for value in values:
        if value is not None:
            latest = value
    return latest


def _step(value: float | None, step: float) -> float | None:
    """``value`` rounded to a multiple of ``step`` (as a float with no binary noise)."""
    if value is None:
        return None
    return round(round(value / step) * step, 3)


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
