"""Running aggregates give what a pass over the frames gives: features, trend, env, assessment.

Each check compares a window's :class:`~brain.summary.WindowSummary` (updated as frames
enter and leave) with :func:`~brain.features.compute_features`, :func:`~brain.features.trend`
and the latest environment computed from scratch over the same frames: on random streams
(out of order, duplicates, several devices, evictions by age and by count, long enough for
the window to rebase its sums) and on every scenario of :mod:`brain.scenarios`.
"""

from __future__ import annotations

import math
from dataclasses import fields

from hypothesis import given, settings, strategies as st

from brain.analyst.base import build_request
from brain.features import Baseline, Features, compute_features, trend
from brain.model import TIME_ORDER, Env, Frame, Profile, State
from brain.rules import assess
from brain.scenarios import KINDS, generate, timelapse
from brain.summary import WindowFrames
from brain.window import Window

MIN = 60_000
T0 = 1_700_000_000_000
REL = ABS = 1e-9
"""The tolerance of the running float sums (see :mod:`brain.summary`)."""

BASELINE = Baseline(resting_hr=62.0, hrv=48.0, hrv_trend=0.9, frames=5_000)


def assert_same_features(running: Features, scratch: Features) -> None:
    for field in fields(Features):
        a, b = getattr(running, field.name), getattr(scratch, field.name)
        if isinstance(b, float) and isinstance(a, float):
            assert math.isclose(a, b, rel_tol=REL, abs_tol=ABS), (field.name, a, b)
        else:
            assert a == b, (field.name, a, b)


def assert_matches_scratch(window: Window, now_ms: int, baseline: Baseline | None) -> None:
    frames = window.frames
    assert isinstance(frames, WindowFrames)
    plain = list(frames)
    assert plain == sorted(plain, key=TIME_ORDER)
    summary = frames.summary
    assert_same_features(
        summary.features(now_ms=now_ms, baseline=baseline),
        compute_features(plain, now_ms=now_ms, baseline=baseline),
    )
    running_trend = summary.trend(now_ms=now_ms)
    scratch_trend = trend(plain, now_ms=now_ms)
    assert [(p.minute, p.steps) for p in running_trend] == [
        (p.minute, p.steps) for p in scratch_trend
    ]
    for mine, theirs in zip(running_trend, scratch_trend, strict=True):
        # Both round a mean to 0.1; a mean within float noise of a .x5 tie may round apart.
        for a, b in ((mine.hr, theirs.hr), (mine.hrv, theirs.hrv)):
            assert (a is None) == (b is None)
            if a is not None and b is not None:
                assert abs(a - b) <= 0.1 + 1e-9, (mine, theirs)
    expected_env = next((f.env for f in reversed(plain) if f.env is not None), None)
    assert summary.latest_env() == expected_env


_maybe_float = st.none() | st.floats(min_value=1.0, max_value=250.0, allow_nan=False)
_envs = st.none() | st.builds(
    Env,
    altitude_m=st.none() | st.floats(min_value=-100, max_value=5000),
    temp_c=st.none() | st.floats(min_value=-20, max_value=45),
    humidity_pct=st.none() | st.floats(min_value=0, max_value=100),
    speed_mps=st.none() | st.floats(min_value=0, max_value=30),
    weather=st.none() | st.sampled_from(["sunny", "rain"]),
)
_frames = st.builds(
    Frame,
    # Offsets in seconds, not ms, so frames often share a timestamp (device/seq decide).
    ts=st.integers(min_value=0, max_value=40 * 60).map(lambda s: T0 + s * 1000),
    hr=st.none() | st.floats(min_value=30, max_value=220),
    hrv=_maybe_float,
    steps=st.none() | st.integers(min_value=0, max_value=300),
    spo2=st.none() | st.floats(min_value=80, max_value=100),
    skin_temp=_maybe_float,
    resp_rate=_maybe_float,
    device=st.sampled_from(["watch-1", "watch-2", "phone", "w", "w!"]),
    seq=st.integers(min_value=0, max_value=12),
    env=_envs,
)
_steps = st.lists(
    st.tuples(
        st.lists(_frames, max_size=25),
        st.integers(min_value=0, max_value=6 * MIN),  # how far the clock moves first
        st.booleans(),  # resend an earlier batch (duplicates)
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=200, deadline=None)
@given(
    steps=_steps,
    span_min=st.integers(min_value=1, max_value=15),
    max_frames=st.integers(min_value=1, max_value=60),
    with_baseline=st.booleans(),
)
def test_running_features_equal_recomputed_ones_on_random_streams(
    steps: list[tuple[list[Frame], int, bool]], span_min: int, max_frames: int, with_baseline: bool
) -> None:
    """Out of order, duplicate, many devices, evicted by age and by count: same answers."""
    window = Window(span_ms=span_min * MIN, max_frames=max_frames)
    baseline = BASELINE if with_baseline else None
    now = T0
    sent: list[list[Frame]] = []
    for batch, advance, resend in steps:
        now += advance
        window.add(batch, now_ms=now)
        if resend and sent:
            window.add(sent[len(sent) // 2], now_ms=now)
        sent.append(batch)
        window.evict(now_ms=now)
        assert_matches_scratch(window, now, baseline)


def test_running_features_survive_many_rebases_of_a_long_stream() -> None:
    """Hours of 1 Hz frames from two devices: the sums are rebased often and stay exact."""
    window = Window(span_ms=5 * MIN, max_frames=400)
    for minute in range(180):
        start = T0 + minute * MIN
        batch = [
            Frame(
                ts=start + s * 1000,
                hr=70 + (minute % 17) + s / 7,
                hrv=40 + s % 9,
                steps=s % 4,
                device="watch-1" if s % 3 else "ring",
                env=Env(altitude_m=minute),
            )
            for s in range(60)
        ]
        window.add(batch, now_ms=start + 59_000)
        if minute % 10 == 9:
            assert_matches_scratch(window, start + 59_000, BASELINE)


def test_every_scenario_gives_the_same_features_trend_and_assessment() -> None:
    """Each scenario, streamed in batches at two cadences: identical rules decisions."""
    for kind in KINDS:
        for frames in (
            generate(kind, start_ms=T0, minutes=15),
            timelapse(kind, start_ms=T0, count=600),
            generate(kind, start_ms=T0, minutes=10, device="watch-2")
            + generate(kind, start_ms=T0 + 15_000, minutes=15, device="watch-1", seed=1),
        ):
            frames.sort(key=TIME_ORDER)
            window = Window()
            previous: State | None = None
            for i in range(0, len(frames), 7):
                batch = frames[i : i + 7]
                now = batch[-1].ts
                window.add(batch, now_ms=now)
                assert_matches_scratch(window, now, BASELINE)
                running = build_request(
                    "u",
                    window.frames,
                    now_ms=now,
                    profile=Profile(),
                    baseline=BASELINE,
                    previous=previous,
                )
                scratch = build_request(
                    "u",
                    list(window.frames),
                    now_ms=now,
                    profile=Profile(),
                    baseline=BASELINE,
                    previous=previous,
                )
                assert running.trend == scratch.trend
                assert assess(running.features, Profile(), previous=previous) == assess(
                    scratch.features, Profile(), previous=previous
                )
                previous = assess(scratch.features, Profile(), previous=previous).state


def test_an_analysis_reads_no_more_frames_for_a_full_window_than_for_a_few() -> None:
    """The summary holds a bounded tail per part, whatever the window's size."""
    small, full = Window(), Window()
    small.add(generate("stress", start_ms=T0, minutes=5), now_ms=T0 + 5 * MIN)
    many = [Frame(ts=T0 + i * 250, hr=70.0, device="watch-1") for i in range(3_600)]
    full.add(many, now_ms=many[-1].ts)
    assert len(full) == 3_600
    for window in (small, full):
        assert all(len(p.tail) <= 11 for p in window.frames.summary.parts)


def test_the_same_frames_object_is_returned_until_the_window_changes() -> None:
    window = Window()
    window.add([Frame(ts=T0, hr=70.0)], now_ms=T0)
    first = window.frames
    assert window.frames is first
    window.add([Frame(ts=T0 + 1000, hr=71.0)], now_ms=T0 + 1000)
    assert window.frames is not first
    assert len(first) == 1  # an earlier snapshot keeps what it held


def test_the_first_altitude_is_found_again_after_it_left_the_window() -> None:
    """The climb is measured from the oldest altitude still held, not the one evicted."""
    window = Window(span_ms=5 * MIN)
    window.add(
        [
            Frame(ts=T0, hr=70.0, env=Env(altitude_m=100.0)),
            Frame(ts=T0 + 2 * MIN, hr=71.0),
            Frame(ts=T0 + 3 * MIN, hr=72.0, env=Env(altitude_m=200.0)),
            Frame(ts=T0 + 4 * MIN, hr=73.0, env=Env(altitude_m=260.0)),
        ],
        now_ms=T0 + 4 * MIN,
    )
    window.evict(now_ms=T0 + 6 * MIN)  # the frame at 100 m leaves
    features = window.frames.summary.features(now_ms=T0 + 6 * MIN, baseline=None)
    assert features.altitude_gain_m == 60.0
    assert_matches_scratch(window, T0 + 6 * MIN, None)
