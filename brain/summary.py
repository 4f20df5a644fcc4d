"""A window's frames at one moment with their running aggregates, and the features read from them.

:meth:`brain.window.Window.frames` returns a :class:`WindowFrames`: the frames as a tuple
(oldest first, as before) that also carries a :class:`WindowSummary`, the window's per-part
aggregates (:mod:`brain.aggregates`) and the prefix sums of its heart rate, HRV and steps,
frozen at that moment. :func:`brain.analyst.base.build_request` reads the features, the
per-minute trend and the latest environment from the summary when it is given one, so an
analysis costs the same for 10 frames and for 3,600: a handful of sums per part, the 11
newest frames of each part, and 15 bisections for the trend.

The results are those of :func:`brain.features.compute_features`,
:func:`brain.features.trend` and the latest environment of the same frames, computed from
scratch. Counts, the steps rate, the latest values and everything read from the recent
frames and the trend (its sums are exact, see :data:`SUM_SCALE_BITS`) are identical; the
window's means and HR slope come from running float sums whose terms are added in another
order, so they agree within a relative tolerance of 1e-9 (absolute 1e-9 near zero), which
the property tests check (tests/brain/test_incremental.py).
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from math import ldexp
from operator import attrgetter
from statistics import fmean
from typing import TYPE_CHECKING, Self, TypeAlias

from brain.aggregates import ENV_FIELDS, MINUTE_MS, PartSummary
from brain.features import (
    MIN_SLOPE_SPAN_MS,
    PRIMARY_MIN_FRAMES,
    RECENT_FRAMES,
    RECENT_MS,
    Baseline,
    Features,
    TrendPoint,
    local_hour,
    rise,
    slope_per_min,
    step_rate,
)
from brain.model import TIME_ORDER, Env, Frame

_TS = attrgetter("ts")

if TYPE_CHECKING:  # array is generic only for type checkers before Python 3.12
    Cumulative: TypeAlias = tuple[array[float], list[int], array[float], list[int], array[float]]
    """Prefix sums over a window's frames, oldest first: HR count, HR sum, HRV count, HRV
    sum, steps. Entry ``skip + i`` is the sum over the frames before the ``i``-th. The HR
    and HRV sums are exact: integers in units of 2**-:data:`SUM_SCALE_BITS`."""

SUM_SCALE_BITS = 64
"""The trend's sums count in units of 2**-64: every float from 2**-12 up is a whole number
of them, so the sums are exact and a minute's mean is what :func:`statistics.fmean` (a
correctly rounded sum) gives, to the last bit; rounding it to 0.1 then agrees too."""

SUM_SCALE = float(2**SUM_SCALE_BITS)


@dataclass(frozen=True, slots=True)
class WindowSummary:
    """The aggregates of a window's frames at one moment; ``frames`` are those frames.

    ``cumulative`` is shared with the window, which only ever appends to those arrays (it
    starts new ones when it must change an entry), so the entries this summary reads,
    ``cumulative_skip`` to ``cumulative_skip + len(frames)``, never change.
    """

    frames: tuple[Frame, ...]
    parts: tuple[PartSummary, ...]
    cumulative: Cumulative
    cumulative_skip: int

    def features(
        self, *, now_ms: int, baseline: Baseline | None, tz_offset_min: int = 0
    ) -> Features:
        """What :func:`brain.features.compute_features` says of ``frames``; never raises."""
        hour = local_hour(now_ms, tz_offset_min)
        selected = self._primary()
        if not selected:
            return Features(now_ms=now_ms, count=0, span_ms=0, local_hour=hour)
        first = min((p.first for p in selected), key=TIME_ORDER)
        last = max((p.last for p in selected), key=TIME_ORDER)
        recent = _recent(selected, now_ms)
        hr_recent = [(f.ts, f.hr) for f in recent if f.hr is not None]
        hr_recent_mean = fmean(v for _, v in hr_recent) if hr_recent else None
        hr_parts = [p for p in selected if p.device is not None]
        n_hr = sum(p.n_hr for p in hr_parts)
        hr_mean = _mean(sum(p.sy for p in hr_parts), n_hr)
        hr_last = max((p.last for p in hr_parts), key=TIME_ORDER).hr if hr_parts else None
        hrv_mean = _mean(sum(p.s_hrv for p in selected), sum(p.n_hrv for p in selected))
        rest = baseline.resting_hr if baseline else None
        base_hrv = baseline.hrv if baseline else None
        n_alt = sum(p.n_alt for p in selected)
        first_alt = _earliest(p.first_alt for p in selected)
        last_alt = _latest(p.last_alt for p in selected)
        altitude = _float_or_none(_env_value(last_alt, "altitude_m"))
        start_alt = _float_or_none(_env_value(first_alt, "altitude_m"))
        latest = [_latest(p.last_fields[i] for p in selected) for i in range(len(ENV_FIELDS))]
        weather = _env_value(latest[3], "weather")
        return Features(
            now_ms=now_ms,
            count=sum(p.count for p in selected),
            span_ms=last.ts - first.ts,
            local_hour=hour,
            hr_mean=hr_mean,
            hr_last=hr_last,
            hr_slope=_slope(hr_parts),
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
            steps_per_min=_step_rate(selected),
            steps_per_min_recent=step_rate(recent),
            spo2=_mean(sum(p.s_spo2 for p in selected), sum(p.n_spo2 for p in selected)),
            skin_temp=_mean(sum(p.s_skin for p in selected), sum(p.n_skin for p in selected)),
            resp_rate=_mean(sum(p.s_resp for p in selected), sum(p.n_resp for p in selected)),
            altitude_m=altitude,
            altitude_gain_m=(
                altitude - start_alt
                if n_alt > 1 and altitude is not None and start_alt is not None
                else None
            ),
            temp_c=_float_or_none(_env_value(latest[0], "temp_c")),
            humidity_pct=_float_or_none(_env_value(latest[1], "humidity_pct")),
            speed_mps=_float_or_none(_env_value(latest[2], "speed_mps")),
            weather=weather if isinstance(weather, str) else None,
        )

    def trend(self, *, now_ms: int, minutes: int = 15) -> tuple[TrendPoint, ...]:
        """What :func:`brain.features.trend` says of ``frames``: per-minute means, oldest first."""
        frames = self.frames
        hr_n, hr_s, hrv_n, hrv_s, steps = self.cumulative
        skip = self.cumulative_skip
        points: list[TrendPoint] = []
        hi = bisect_right(frames, now_ms, key=_TS)
        for back in range(minutes):
            lo = bisect_right(frames, now_ms - (back + 1) * MINUTE_MS, hi=hi, key=_TS)
            if hi > lo:
                a, b = skip + lo, skip + hi
                n = int(hr_n[b] - hr_n[a])
                m = int(hrv_n[b] - hrv_n[a])
                points.append(
                    TrendPoint(
                        minute=back,
                        hr=round(_exact_sum(hr_s[b] - hr_s[a]) / n, 1) if n else None,
                        hrv=round(_exact_sum(hrv_s[b] - hrv_s[a]) / m, 1) if m else None,
                        steps=int(steps[b] - steps[a]),
                    )
                )
            hi = lo
        points.reverse()
        return tuple(points)

    def latest_env(self) -> Env | None:
        """The environment of the newest frame that has one (any device), or ``None``."""
        frame = _latest(p.last_env for p in self.parts)
        return frame.env if frame is not None else None

    def _primary(self) -> Sequence[PartSummary]:
        """The parts :func:`brain.features.primary` follows: the newest HR device's part and
        the part without HR, once that device has :data:`PRIMARY_MIN_FRAMES` heart rates."""
        with_hr = [p for p in self.parts if p.device is not None]
        if not with_hr:
            return self.parts
        newest = max(with_hr, key=lambda p: TIME_ORDER(p.last))
        if newest.count < PRIMARY_MIN_FRAMES:
            return self.parts
        return [p for p in self.parts if p is newest or p.device is None]


class WindowFrames(tuple[Frame, ...]):
    """A window's frames, oldest first, as a tuple that carries their :class:`WindowSummary`."""

    summary: WindowSummary

    @classmethod
    def of(cls, frames: Iterable[Frame], summary: WindowSummary) -> Self:
        """The tuple of ``frames`` with ``summary`` attached."""
        made = cls(frames)
        made.summary = summary
        return made


def _recent(parts: Iterable[PartSummary], now_ms: int) -> list[Frame]:
    """The newest :data:`RECENT_FRAMES` frames of ``parts`` within :data:`RECENT_MS`."""
    tails = sorted((f for p in parts for f in p.tail), key=TIME_ORDER)[-RECENT_FRAMES:]
    cutoff = now_ms - RECENT_MS
    return [f for f in tails if f.ts >= cutoff]


def _slope(parts: Sequence[PartSummary]) -> float | None:
    """The least-squares HR slope (bpm/min) of ``parts`` from their running sums."""
    n = sum(p.n_hr for p in parts)
    if n < 3:
        return None
    first = min(p.first.ts for p in parts)
    last = max(p.last.ts for p in parts)
    if last - first < MIN_SLOPE_SPAN_MS:
        return None
    sx = sum(p.sx for p in parts)
    sy = sum(p.sy for p in parts)
    sxx = sum(p.sxx for p in parts) - sx * sx / n
    sxy = sum(p.sxy for p in parts) - sx * sy / n
    return sxy / sxx if sxx > 0 else None


def _step_rate(parts: Sequence[PartSummary]) -> float | None:
    """Steps/min as :func:`brain.features.step_rate`: the first stepped frame's steps are
    the time before the span, so they are left out."""
    if sum(p.n_steps for p in parts) < 2:
        return None
    first = _earliest(p.first_steps for p in parts)
    last = _latest(p.last_steps for p in parts)
    if first is None or last is None or last.ts - first.ts <= 0:
        return None
    total = sum(p.s_steps for p in parts) - (first.steps or 0)
    return total * 60_000 / (last.ts - first.ts)


def _exact_sum(scaled: int) -> float:
    """A scaled exact sum as the nearest float (``float(int)`` rounds correctly)."""
    return ldexp(float(scaled), -SUM_SCALE_BITS)


def _mean(total: float, count: int) -> float | None:
    return total / count if count else None


def _earliest(frames: Iterable[Frame | None]) -> Frame | None:
    present = [f for f in frames if f is not None]
    return min(present, key=TIME_ORDER) if present else None


def _latest(frames: Iterable[Frame | None]) -> Frame | None:
    present = [f for f in frames if f is not None]
    return max(present, key=TIME_ORDER) if present else None


def _env_value(frame: Frame | None, name: str) -> float | str | None:
    if frame is None or frame.env is None:
        return None
    value: float | str | None = getattr(frame.env, name)
    return value


def _float_or_none(value: float | str | None) -> float | None:
    return value if isinstance(value, float | int) else None
