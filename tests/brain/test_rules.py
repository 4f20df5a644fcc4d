"""The deterministic rules: states from synthetic windows, hysteresis, energy and wording."""

from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import pairwise

import pytest

from brain.coaching import MAX_REASONING
from brain.features import Baseline, Features, compute_baseline, compute_features
from brain.model import Action, CoachStyle, CoachTone, Frame, Mood, Profile, State
from brain.rules import assess, classify, energy_budget
from brain.scenarios import generate, history, timelapse
from brain.window import Window

MIN = 60_000
HOUR = 60 * MIN
DAY0 = 1_700_006_400_000  # 2023-11-15 00:00 UTC

HEALTHY = compute_baseline(history("healthy", end_ms=DAY0))
BURNOUT = compute_baseline(history("burnout", end_ms=DAY0))
FIT = Baseline(resting_hr=55.0, hrv=100.0, hrv_trend=1.0, frames=2000)  # a very high normal


def window_of(kind: str, *, hour: int = 10, baseline: Baseline | None = HEALTHY) -> Features:
    """Features of 15 minutes of ``kind`` ending at ``hour``:15 UTC."""
    start = DAY0 + hour * HOUR
    frames = generate(kind, start_ms=start, minutes=15)
    return compute_features(frames, now_ms=start + 15 * MIN, baseline=baseline)


@dataclass(frozen=True)
class Case:
    name: str
    kind: str
    state: State
    mood: Mood
    actions: tuple[Action, ...]
    hour: int = 10
    baseline: Baseline | None = HEALTHY


CASES = [
    Case(
        "hr rising, no steps: stress", "stress", State.STRESSED, Mood.ANXIOUS, (Action.BREATHING,)
    ),
    Case(
        "hr rising, no steps, no baseline: stress",
        "stress",
        State.STRESSED,
        Mood.ANXIOUS,
        (Action.BREATHING,),
        baseline=None,
    ),
    Case(
        "hr rising at 150 steps/min, 60 bpm over rest: exercise and drink",
        "exercise",
        State.EXERCISING,
        Mood.ENERGIZED,
        (Action.KEEP_GOING, Action.HYDRATE),
    ),
    Case(
        "hr rising at 150 steps/min, no baseline: exercise",
        "exercise",
        State.EXERCISING,
        Mood.ENERGIZED,
        (Action.KEEP_GOING,),
        baseline=None,
    ),
    Case(
        "exercise with hrv far below a high baseline: downgrade",
        "exercise",
        State.EXERCISING,
        Mood.TIRED,
        (Action.DOWNGRADE_WORKOUT, Action.HYDRATE),
        baseline=FIT,
    ),
    Case(
        "uphill hike at altitude: exercise and drink",
        "hike",
        State.EXERCISING,
        Mood.ENERGIZED,
        (Action.KEEP_GOING, Action.HYDRATE),
    ),
    Case(
        "low hrv against a healthy history: fatigue",
        "fatigue",
        State.FATIGUED,
        Mood.TIRED,
        (Action.REST, Action.DOWNGRADE_WORKOUT),
    ),
    Case(
        "low hrv after a burnout history: fatigue",
        "fatigue",
        State.FATIGUED,
        Mood.TIRED,
        (Action.REST, Action.DOWNGRADE_WORKOUT),
        baseline=BURNOUT,
    ),
    Case("low hr, still, 02:00: sleeping", "sleep", State.SLEEPING, Mood.SLEEPY, (), hour=2),
    Case(
        "low hr, still, 02:00, no baseline: sleeping",
        "sleep",
        State.SLEEPING,
        Mood.SLEEPY,
        (),
        hour=2,
        baseline=None,
    ),
    Case("low hr, still, 14:00: resting", "sleep", State.RESTING, Mood.CONTENT, (), hour=14),
    Case("steady hr at a desk: calm", "calm", State.CALM, Mood.HAPPY, ()),
    Case("walking in 36 degrees: calm, drink", "heat", State.CALM, Mood.CONTENT, (Action.HYDRATE,)),
    Case(
        "airliner cabin: calm, drink, stretch",
        "flight",
        State.CALM,
        Mood.CONTENT,
        (Action.HYDRATE, Action.MOVE),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_a_synthetic_window_gets_the_expected_assessment(case: Case) -> None:
    features = window_of(case.kind, hour=case.hour, baseline=case.baseline)
    result = assess(features, Profile())
    assert (result.state, result.mood, result.actions) == (case.state, case.mood, case.actions)
    assert 0 <= result.energy <= 100
    assert f"{features.hr_mean:.0f} bpm" in result.reasoning or "HRV" in result.reasoning


def test_a_hike_reasoning_names_the_climb_and_altitude() -> None:
    features = window_of("hike")
    reasoning = assess(features, Profile()).reasoning
    assert f"{features.altitude_gain_m:.0f} m climbed" in reasoning
    assert f"{features.altitude_m:.0f} m" in reasoning


def test_fatigue_reasoning_quotes_hrv_against_the_baseline() -> None:
    features = window_of("fatigue", baseline=BURNOUT)
    reasoning = assess(features, Profile()).reasoning
    assert f"HRV {features.hrv_mean:.0f} ms" in reasoning
    assert f"{features.hrv_ratio:.0%} of your baseline" in reasoning


@pytest.mark.parametrize(
    "frames",
    [[], [Frame(ts=DAY0, hr=70.0)], [Frame(ts=DAY0 + i * 10_000, hr=70.0) for i in range(3)]],
    ids=["none", "one frame", "three frames"],
)
def test_too_little_data_is_calm_and_says_so(frames: list[Frame]) -> None:
    features = compute_features(frames, now_ms=DAY0 + MIN, baseline=HEALTHY)
    result = assess(features, Profile(style=CoachStyle.STRICT))
    assert (result.state, result.actions) == (State.CALM, ())
    assert result.reasoning.startswith("Not enough data yet")
    assert f"{len(frames)} frames" in result.reasoning


def test_stress_turns_to_calm_once_hr_settles_without_flapping() -> None:
    """Minute by minute through calm, 15 min of stress and calm again, as the reactor would."""
    start = DAY0 + 10 * HOUR
    frames = [
        *generate("calm", start_ms=start, minutes=10),
        *generate("stress", start_ms=start + 10 * MIN, minutes=15),
        *generate("calm", start_ms=start + 25 * MIN, minutes=25),
    ]
    window = Window()
    state: State | None = None
    states: list[State] = []
    for minute in range(5, 51):
        now = start + minute * MIN
        window.add([f for f in frames if f.ts < now], now_ms=now)
        features = compute_features(window.frames, now_ms=now, baseline=HEALTHY)
        state = assess(features, Profile(), previous=state).state
        states.append(state)
    changes = [(a, b) for a, b in pairwise(states) if a != b]
    assert states[20] == State.STRESSED  # minute 25: the peak of the stress
    assert states[-1] == State.CALM
    assert changes == [(State.CALM, State.STRESSED), (State.STRESSED, State.CALM)]


def test_a_falling_hr_keeps_a_stressed_user_stressed_until_it_settles() -> None:
    base = window_of("calm")
    falling = replace(base, hr_mean=95.0, hr_over_rest=38.0, hr_slope=-2.0, hr_slope_recent=-2.0)
    settled = replace(base, hr_mean=70.0, hr_over_rest=13.0, hr_slope=-0.3, hr_slope_recent=0.2)
    assert classify(falling, State.STRESSED) == State.STRESSED
    assert classify(falling, None) == State.CALM
    assert classify(settled, State.STRESSED) == State.CALM


def test_a_workout_slowing_to_70_steps_per_minute_stays_a_workout() -> None:
    slower = replace(window_of("exercise"), steps_per_min=70.0, steps_per_min_recent=70.0)
    assert classify(slower, State.EXERCISING) == State.EXERCISING
    assert classify(slower, State.CALM) != State.EXERCISING
    stopped = replace(slower, steps_per_min_recent=5.0)
    assert classify(stopped, State.EXERCISING) != State.EXERCISING


def test_fatigue_needs_hrv_back_to_80_percent_of_baseline_to_end() -> None:
    between = replace(window_of("calm"), hrv_ratio=0.75, hrv_trend=1.0)
    assert classify(between, State.FATIGUED) == State.FATIGUED
    assert classify(between, State.CALM) == State.CALM
    assert classify(replace(between, hrv_ratio=0.85), State.FATIGUED) == State.CALM


def test_running_overrides_a_previous_stress() -> None:
    assert classify(window_of("exercise"), State.STRESSED) == State.EXERCISING


def test_energy_is_higher_asleep_than_calm_than_stressed() -> None:
    sleeping = assess(window_of("sleep", hour=2), Profile()).energy
    calm = assess(window_of("calm"), Profile()).energy
    stressed = assess(window_of("stress"), Profile()).energy
    assert sleeping > calm > stressed


@pytest.mark.parametrize(
    "change",
    [
        {"altitude_m": 3500.0},
        {"temp_c": 35.0},
        {"spo2": 91.0},
        {"hrv_ratio": 0.6},
        {"hrv_trend": 0.6},
    ],
    ids=["thin air", "heat", "low spo2", "low hrv", "falling hrv"],
)
def test_hard_conditions_cost_energy(change: dict[str, float]) -> None:
    base = window_of("calm")
    assert energy_budget(replace(base, **change), State.CALM) < energy_budget(base, State.CALM)  # type: ignore[arg-type]


def test_energy_stays_within_0_and_100_at_the_extremes() -> None:
    base = window_of("exercise")
    worst = replace(
        base,
        hrv_ratio=0.1,
        hrv_trend=0.1,
        hr_over_rest=120.0,
        altitude_m=8000.0,
        temp_c=45.0,
        spo2=80.0,
    )
    best = replace(window_of("sleep", hour=2), hrv_ratio=3.0, hrv_trend=2.0)
    assert energy_budget(worst, State.EXERCISING) == 0
    assert energy_budget(best, State.SLEEPING) == 100


def test_advice_follows_the_coach_style_and_facts_follow_the_tone() -> None:
    features = window_of("stress")
    text = {
        (style, tone): assess(features, Profile(style=style, tone=tone)).reasoning
        for style in CoachStyle
        for tone in CoachTone
    }
    assert len(set(text.values())) == 6
    assert "Stop" in text[(CoachStyle.STRICT, CoachTone.DIRECT)]
    assert "Your heart rate" in text[(CoachStyle.NEUTRAL, CoachTone.GENTLE)]
    assert text[(CoachStyle.NEUTRAL, CoachTone.DIRECT)].startswith("HR ")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_every_reasoning_fits_on_a_device(case: Case) -> None:
    features = window_of(case.kind, hour=case.hour, baseline=case.baseline)
    for style in CoachStyle:
        for tone in CoachTone:
            reasoning = assess(features, Profile(style=style, tone=tone)).reasoning
            assert 0 < len(reasoning) <= MAX_REASONING
            assert "-0.0" not in reasoning


def test_a_short_window_gives_a_first_impression_that_says_what_it_rests_on() -> None:
    frames = [Frame(ts=DAY0 + i * 10_000, hr=70.0, steps=0) for i in range(6)]
    features = compute_features(frames, now_ms=DAY0 + MIN, baseline=HEALTHY)
    result = assess(features, Profile())
    assert result.state == State.CALM
    assert result.reasoning.startswith("First impression (6 frames over 50 s): ")
    assert len(result.reasoning) <= MAX_REASONING


def play(chapters: list[str], *, every_s: float = 0.5, per: int = 24) -> list[list[State]]:
    """The state after each frame of a time-lapse story, chapter by chapter, as the reactor
    would see it (one window, the previous state for hysteresis, no baseline)."""
    window, state, states = Window(), None, []
    start = DAY0 + 10 * HOUR
    for number, kind in enumerate(chapters):
        at = start + round(number * per * every_s * 1000)
        chapter = []
        for frame in timelapse(kind, start_ms=at, count=per, every_s=every_s, device="demo"):
            window.add([frame], now_ms=frame.ts)
            features = compute_features(window.frames, now_ms=frame.ts, baseline=None)
            state = assess(features, Profile(), previous=state).state
            chapter.append(state)
        states.append(chapter)
    return states


def test_a_time_lapse_story_shows_each_chapter_within_its_first_half() -> None:
    """Calm, stress, exercise, recovery at two frames a second: the recent frames decide, so
    each chapter's state wins over the last one's within six seconds, and holds."""
    chapters = play(["calm", "stress", "exercise", "calm"])
    expected = [State.CALM, State.STRESSED, State.EXERCISING, State.CALM]
    for states, want in zip(chapters, expected, strict=True):
        first = states.index(want)
        assert first <= 12, states
        assert set(states[first:]) == {want}, states


def test_a_falling_hr_after_a_workout_is_not_a_rise() -> None:
    recovery = play(["exercise", "calm"])[1]
    assert State.STRESSED not in recovery


def test_the_newest_device_decides_over_older_overlapping_frames() -> None:
    """A stress scenario injected over the last minutes of a workout is stress, not exercise."""
    end = DAY0 + 10 * HOUR + 15 * MIN
    workout = timelapse("exercise", start_ms=end - 50_000, count=48, every_s=1, device="watch")
    stress = generate("stress", start_ms=end - 15 * MIN + 30_000, minutes=15, device="scenario")
    features = compute_features([*workout, *stress], now_ms=end, baseline=HEALTHY)
    assert features.count == len(stress)
    assert assess(features, Profile(), previous=State.EXERCISING).state == State.STRESSED
