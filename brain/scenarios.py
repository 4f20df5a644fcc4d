"""Synthetic, deterministic physiology: frames that look like stress, exercise, sleep, a hike…

Tests, the watch simulator and the demo tools need believable sensor data without a watch.
:func:`generate` makes a few minutes of one situation (``kind``), :func:`history` makes two
weeks of coarse everyday life for a baseline. The same arguments always give the same
frames (a seeded :class:`random.Random`, no clock), so a test can pin exact outcomes.

The shapes follow what wearables report: heart rate climbs about 2 bpm/min under acute
stress with no movement, runs at 150+ steps/min with HR towards 150 bpm, HRV (RMSSD) falls
under load and rises in sleep, SpO2 dips to the low 90s in an airliner cabin.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

from brain.model import Env, Frame

Kind = Literal["calm", "stress", "exercise", "sleep", "hike", "heat", "flight", "fatigue"]
KINDS: tuple[Kind, ...] = get_args(Kind)
"""Every situation :func:`generate` knows."""

HistoryProfile = Literal["healthy", "burnout"]

DEFAULT_EVERY_S = 30
"""Seconds between generated frames: what a phone bridge forwards from a watch."""


@dataclass(frozen=True, slots=True)
class _Sample:
    """The noise-free values of one moment; ``steps`` is a rate per minute."""

    hr: float
    hrv: float
    steps: float
    spo2: float
    skin_temp: float
    resp_rate: float
    env: Env


_INDOOR = Env(altitude_m=120.0, temp_c=21.0, humidity_pct=45.0, speed_mps=0.0, weather="cloudy")


def _calm(t: float) -> _Sample:
    return _Sample(68 + math.sin(t / 3), 55, 4, 98, 33.6, 14, _INDOOR)


def _stress(t: float) -> _Sample:
    return _Sample(
        hr=min(72 + 2.2 * t, 118),
        hrv=max(48 - 1.2 * t, 22),
        steps=0,
        spo2=98,
        skin_temp=33.5 - 0.05 * t,
        resp_rate=min(14 + 0.4 * t, 22),
        env=_INDOOR,
    )


def _exercise(t: float) -> _Sample:
    return _Sample(
        hr=min(85 + 5 * t, 158),
        hrv=max(42 - 1.0 * t, 32),
        steps=152,
        spo2=97,
        skin_temp=min(33 + 0.1 * t, 35),
        resp_rate=min(18 + t, 34),
        env=Env(altitude_m=50.0, temp_c=18.0, humidity_pct=60.0, speed_mps=2.8, weather="clear"),
    )


def _sleep(t: float) -> _Sample:
    env = Env(altitude_m=120.0, temp_c=19.0, humidity_pct=50.0, speed_mps=0.0, weather="clear")
    return _Sample(54 - 0.05 * t, 72, 0, 96, 34.5, 12, env)


def _hike(t: float) -> _Sample:
    climb = 12 * t  # metres: a steady mountain trail
    env = Env(
        altitude_m=1500 + climb,
        temp_c=16 - 0.0065 * climb,  # the standard lapse rate
        humidity_pct=50.0,
        speed_mps=1.1,
        weather="clear",
    )
    return _Sample(min(102 + 1.5 * t, 135), 36, 106, 96.5, 32.5, 20, env)


def _heat(t: float) -> _Sample:
    env = Env(altitude_m=30.0, temp_c=36.0, humidity_pct=55.0, speed_mps=0.9, weather="sunny")
    return _Sample(min(88 + 0.8 * t, 110), 40, 60, 97, 35.8, 18, env)


def _flight(t: float) -> _Sample:
    # GPS altitude and ground speed of a cruising airliner; the cabin is dry and pressurised
    # to about 2,400 m, which is why SpO2 sits in the low 90s.
    env = Env(altitude_m=11_000.0, temp_c=22.0, humidity_pct=12.0, speed_mps=230.0)
    return _Sample(78, 42, 0, 93, 33.2, 16, env)


def _fatigue(t: float) -> _Sample:
    return _Sample(76 + 0.5 * math.sin(t / 2), 26, 3, 97, 33.4, 15, _INDOOR)


_SHAPES: dict[Kind, Callable[[float], _Sample]] = {
    "calm": _calm,
    "stress": _stress,
    "exercise": _exercise,
    "sleep": _sleep,
    "hike": _hike,
    "heat": _heat,
    "flight": _flight,
    "fatigue": _fatigue,
}


def generate(
    kind: str,
    *,
    start_ms: int,
    minutes: float,
    device: str = "watch-1",
    seed: int = 0,
    every_s: int = DEFAULT_EVERY_S,
) -> list[Frame]:
    """Frames of ``kind`` from ``start_ms`` for ``minutes``, one every ``every_s``, oldest first.

    Raises :class:`ValueError` for an unknown kind or a non-positive duration or interval.
    """
    if kind not in _SHAPES:
        raise ValueError(f"unknown scenario kind {kind!r}; expected one of {', '.join(KINDS)}")
    if minutes <= 0 or every_s <= 0:
        raise ValueError(f"minutes and every_s must be positive, got {minutes} and {every_s}")
    shape = _SHAPES[kind]
    rng = random.Random(f"{kind}:{seed}")
    count = int(minutes * 60 // every_s)
    return [
        _frame(
            shape(i * every_s / 60),
            rng,
            ts=start_ms + i * every_s * 1000,
            every_s=every_s,
            device=device,
        )
        for i in range(count)
    ]


def timelapse(
    kind: str,
    *,
    start_ms: int,
    count: int,
    every_s: float = 1.0,
    speed: float = 60.0,
    device: str = "watch-1",
    seed: int = 0,
) -> list[Frame]:
    """``count`` frames of ``kind`` ``every_s`` apart from ``start_ms``, played ``speed`` times
    faster than life: what a demo streams live to tell minutes of a story in seconds.

    The heart rate, HRV and breathing follow the situation's shape at that speed (a stress
    climb of 2 bpm/min shows in seconds); steps stay a real rate (a runner still takes about
    150 steps a minute), so each frame counts the steps of its own ``every_s``. Raises
    :class:`ValueError` for an unknown kind or non-positive arguments.
    """
    if kind not in _SHAPES:
        raise ValueError(f"unknown scenario kind {kind!r}; expected one of {', '.join(KINDS)}")
    if count <= 0 or every_s <= 0 or speed <= 0:
        raise ValueError(f"count, every_s and speed must be positive: {count}, {every_s}, {speed}")
    shape = _SHAPES[kind]
    rng = random.Random(f"timelapse:{kind}:{seed}")
    return [
        _frame(
            shape(i * every_s * speed / 60),
            rng,
            ts=start_ms + round(i * every_s * 1000),
            every_s=every_s,
            device=device,
        )
        for i in range(count)
    ]


def history(
    profile: str = "healthy",
    *,
    days: int = 14,
    end_ms: int,
    device: str = "watch-1",
    seed: int = 0,
    every_min: int = 10,
) -> list[Frame]:
    """Two weeks (``days``) of coarse everyday frames ending before ``end_ms``, oldest first.

    ``healthy`` keeps a steady resting HR near 56 bpm and HRV near 60 ms; ``burnout`` starts
    the same and drifts, day by day, to a resting HR 12 bpm higher and HRV less than half.
    Nights (00-07 UTC) are asleep, days alternate sitting, walking and a daily workout.
    Raises :class:`ValueError` for an unknown profile or a non-positive span.
    """
    if profile not in get_args(HistoryProfile):
        raise ValueError(f"unknown history profile {profile!r}; expected healthy or burnout")
    if days <= 0 or every_min <= 0:
        raise ValueError(f"days and every_min must be positive, got {days} and {every_min}")
    rng = random.Random(f"history:{profile}:{seed}")
    step_ms = every_min * 60_000
    count = days * 24 * 60 // every_min
    start_ms = end_ms - count * step_ms
    frames = []
    for i in range(count):
        ts = start_ms + i * step_ms
        progress = i / count if profile == "burnout" else 0.0
        hour = (ts // 3_600_000) % 24
        if hour < 7:
            hr, hrv, steps = 54.0, 68.0, 0
        elif hour == 18:  # the daily workout
            hr, hrv, steps = 128.0, 30.0, 1_400
        else:
            sitting = rng.random() < 0.45
            hr, hrv, steps = (64.0, 55.0, 0) if sitting else (80.0, 48.0, rng.randint(200, 700))
        frames.append(
            Frame(
                ts=ts,
                hr=round(hr + 12 * progress + rng.gauss(0, 1.5), 1),
                hrv=round(max(hrv * (1 - 0.6 * progress) + rng.gauss(0, 3), 5), 1),
                steps=steps,
                spo2=97.0,
                skin_temp=33.5,
                resp_rate=14.0,
                device=device,
            )
        )
    return frames


def _frame(sample: _Sample, rng: random.Random, *, ts: int, every_s: float, device: str) -> Frame:
    """A frame with sensor noise added to ``sample``; steps are counted over ``every_s``."""
    steps = sample.steps * every_s / 60
    return Frame(
        ts=ts,
        hr=round(sample.hr + rng.gauss(0, 0.8), 1),
        hrv=round(max(sample.hrv + rng.gauss(0, 2), 5), 1),
        steps=max(round(steps + rng.gauss(0, steps * 0.05)), 0) if steps else 0,
        spo2=round(min(sample.spo2 + rng.gauss(0, 0.3), 100), 1),
        skin_temp=round(sample.skin_temp + rng.gauss(0, 0.05), 2),
        resp_rate=round(sample.resp_rate + rng.gauss(0, 0.4), 1),
        device=device,
        env=sample.env,
    )
