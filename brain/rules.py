"""Deterministic rules: the assessment that is always available, with or without an LLM.

:func:`assess` reads :class:`~brain.features.Features` and returns an
:class:`~brain.model.Assessment`: a state, the pet's mood, an energy budget (0-100, "spoon
theory": what rest and HRV give, what exercise, stress, altitude and heat take), suggested
actions and one or two readable sentences (see :mod:`brain.coaching`).

States are checked in :data:`PRIORITY` order. Entering a state needs a clear signal; staying
in it (when ``previous`` is that state) needs less, so a user who calmed down a little does
not flap between stressed and calm on every frame. For example, stressed is entered when HR
climbs by 1 bpm/min or more with no steps, but left only once the recent slope is within
±0.5 bpm/min and HR is back within 15 bpm of rest.
"""

from __future__ import annotations

from brain.coaching import first_impression, no_data_reasoning, reasoning
from brain.features import Features
from brain.model import Action, Assessment, Mood, Profile, Source, State

MIN_FRAMES = 4
"""Fewer frames than this is not enough data to call anything but calm."""

MIN_SPAN_MS = 3 * 60_000
"""Frames spanning less than this show no trend yet: the rules still decide from what the
recent frames show (a clear rise, a running pace), and the reasoning says it is a first
impression."""

RISING = 1.0
"""Whole-window HR slope (bpm/min) that counts as rising."""
RISING_RECENT = 1.5
"""Slope of the last 5 minutes that counts as rising even if the whole window does not."""
RISE_BPM = 5.0
"""HR rise across the recent frames (newer half over older half) that counts as rising."""
SETTLED = 0.5
"""|slope| (bpm/min) below which HR has settled: needed to leave stressed."""

STILL = 10.0
"""Steps/min below which the user is not moving (fidgeting is not walking)."""
ACTIVE = 100.0
"""Steps/min above which the user is working out (a brisk walk or more)."""
ACTIVE_EXIT = 60.0
"""Steps/min an ongoing workout may slow to before it counts as over."""
CLIMBING_M = 50.0
"""Altitude gained over the window that makes a slower pace a workout (a hike uphill)."""

FATIGUED_HRV = 0.7
"""HRV over baseline below which the user is fatigued."""
RECOVERED_HRV = 0.8
"""HRV over baseline a fatigued user must get back to."""
FATIGUED_TREND = 0.8
"""14-day HRV trend (last 3 days over all) that shows accumulating fatigue."""
VERY_LOW_HRV = 0.6
"""HRV over baseline below which a workout should be toned down."""
LOW_HRV_MS = 18.0
"""Without a baseline, an RMSSD below this is low for almost any adult."""

NIGHT_HOURS = frozenset({22, 23, 0, 1, 2, 3, 4, 5})
"""Local hours when stillness with a low HR is sleep rather than rest."""

PRIORITY: tuple[State, ...] = (
    State.EXERCISING,
    State.STRESSED,
    State.SLEEPING,
    State.FATIGUED,
    State.RESTING,
    State.CALM,
)
"""The order states are tried in: movement explains HR best, calm is what is left."""

NO_DATA_ENERGY = 60
"""The energy reported before there is enough data (mid band, nothing to show yet)."""


def assess(features: Features, profile: Profile, *, previous: State | None = None) -> Assessment:
    """Decide state, mood, energy, actions and reasoning from ``features``; never raises.

    ``previous`` is the user's current state, for hysteresis. Fewer than :data:`MIN_FRAMES`
    frames give calm with a reasoning that says so; frames spanning less than
    :data:`MIN_SPAN_MS` give a first impression (the reasoning starts with its evidence).
    """
    f = features
    if f.count < MIN_FRAMES or f.hr_mean is None:
        return Assessment(
            state=State.CALM,
            mood=Mood.CONTENT,
            energy=NO_DATA_ENERGY,
            reasoning=no_data_reasoning(f),
            source=Source.RULES,
        )
    state = classify(f, previous)
    energy = energy_budget(f, state)
    acts = actions(f, state)
    said = reasoning(f, state, profile, actions=acts, energy=energy)
    return Assessment(
        state=state,
        mood=mood(f, state, energy),
        energy=energy,
        reasoning=first_impression(f, said) if f.span_ms < MIN_SPAN_MS else said,
        actions=acts,
        source=Source.RULES,
    )


def classify(f: Features, previous: State | None = None) -> State:
    """The first state in :data:`PRIORITY` that ``f`` enters, or that it stays in.

    A higher-priority state still overrides the previous one (a stressed user who starts
    running is exercising); the previous one overrides lower-priority states.
    """
    for state in PRIORITY:
        if state is previous and _stays(state, f):
            return state
        if _enters(state, f):
            return state
    return State.CALM  # unreachable: calm is always entered; kept for the type checker


def _enters(state: State, f: Features) -> bool:
    if state is State.EXERCISING:
        steps = _steps(f)
        climbing = (f.altitude_gain_m or 0.0) >= CLIMBING_M and steps >= ACTIVE_EXIT
        return (steps > ACTIVE or climbing) and (_rising(f) or _elevated(f, 20))
    if state is State.STRESSED:
        return _rising(f) and _steps(f) < STILL and _elevated(f, 8)
    if state is State.SLEEPING:
        return f.local_hour in NIGHT_HOURS and _still_low(f, over_rest=3, absolute=62)
    if state is State.FATIGUED:
        return _hrv_below(f, FATIGUED_HRV)
    if state is State.RESTING:
        return _still_low(f, over_rest=5, absolute=64)
    return True  # calm: nothing else explains the window


def _stays(state: State, f: Features) -> bool:
    if state is State.EXERCISING:
        return _steps(f) >= ACTIVE_EXIT
    if state is State.STRESSED:
        # Pacing about does not end stress; a workout's pace does (and is exercising).
        return _steps(f) <= ACTIVE and not _settled(f)
    if state is State.SLEEPING:
        return _still_low(f, over_rest=8, absolute=66)
    if state is State.FATIGUED:
        return _hrv_below(f, RECOVERED_HRV)
    return _enters(state, f)


def _steps(f: Features) -> float:
    """Recent steps/min when known (what the user is doing now), else the window's."""
    if f.steps_per_min_recent is not None:
        return f.steps_per_min_recent
    return f.steps_per_min or 0.0


def _rising(f: Features) -> bool:
    """HR climbs now: recently, or over the window while the recent frames do not fall.

    The recent frames weigh more than the window, so a new situation wins over an old one:
    an HR falling after a workout is not a rise because the window still holds the climb.
    """
    recent = (f.hr_slope_recent or 0.0) >= RISING_RECENT or (f.hr_rise_recent or 0.0) >= RISE_BPM
    falling = (f.hr_slope_recent or 0.0) <= -RISING_RECENT or (f.hr_rise_recent or 0.0) <= -RISE_BPM
    return recent or ((f.hr_slope or 0.0) >= RISING and not falling)


def _elevated(f: Features, over_rest: float) -> bool:
    """Recent HR at least ``over_rest`` above the baseline's rest (above 67 + it without one)."""
    above = f.hr_recent_over_rest if f.hr_recent_over_rest is not None else f.hr_over_rest
    if above is not None:
        return above >= over_rest
    level = f.hr_recent if f.hr_recent is not None else f.hr_mean
    return (level or 0.0) >= 67 + over_rest


def _settled(f: Features) -> bool:
    slope = f.hr_slope_recent if f.hr_slope_recent is not None else f.hr_slope
    flat = slope is not None and abs(slope) <= SETTLED
    return flat and not _elevated(f, 15)


def _still_low(f: Features, *, over_rest: float, absolute: float) -> bool:
    """No movement, a flat HR, and HR near rest (or below ``absolute`` without a baseline)."""
    if _steps(f) >= STILL or abs(f.hr_slope or 0.0) >= RISING:
        return False
    if f.hr_over_rest is not None:
        return f.hr_over_rest <= over_rest
    return (f.hr_mean or 0.0) < absolute


def _hrv_below(f: Features, ratio: float) -> bool:
    if f.hrv_ratio is not None:
        trending_down = f.hrv_trend is not None and f.hrv_trend < FATIGUED_TREND
        return f.hrv_ratio < ratio or (trending_down and f.hrv_ratio < 1.0)
    return f.hrv_mean is not None and f.hrv_mean < LOW_HRV_MS


def very_low_hrv(f: Features) -> bool:
    """Whether HRV is so far below baseline that a workout should be toned down."""
    return f.hrv_ratio is not None and f.hrv_ratio < VERY_LOW_HRV


def mood(f: Features, state: State, energy: int) -> Mood:
    """The pet's mood for ``state``: calm is happy with energy to spare, else content."""
    if state is State.EXERCISING:
        return Mood.TIRED if very_low_hrv(f) else Mood.ENERGIZED
    if state is State.STRESSED:
        return Mood.ANXIOUS
    if state is State.FATIGUED:
        return Mood.TIRED
    if state is State.SLEEPING or (state is State.RESTING and f.local_hour in NIGHT_HOURS):
        return Mood.SLEEPY
    if state is State.CALM and energy >= 67:
        return Mood.HAPPY
    return Mood.CONTENT


def actions(f: Features, state: State) -> tuple[Action, ...]:
    """What the companion suggests in ``state`` (possibly nothing)."""
    hot = (f.temp_c or 0.0) >= 28 or (f.skin_temp or 0.0) >= 35.5
    if state is State.EXERCISING:
        first = Action.DOWNGRADE_WORKOUT if very_low_hrv(f) else Action.KEEP_GOING
        thirsty = hot or (f.altitude_m or 0.0) >= 1500 or (f.hr_over_rest or 0.0) >= 60
        return (first, Action.HYDRATE) if thirsty else (first,)
    if state is State.STRESSED:
        return (Action.BREATHING,)
    if state is State.FATIGUED:
        return (Action.REST, Action.DOWNGRADE_WORKOUT)
    if state is State.RESTING:
        return (Action.WIND_DOWN,) if f.local_hour in NIGHT_HOURS else ()
    if state is State.CALM:
        dry = f.humidity_pct is not None and f.humidity_pct < 20
        sedentary = (f.steps_per_min or 0.0) < 1 and f.span_ms >= 10 * 60_000
        calm_actions = [Action.HYDRATE] if hot or dry else []
        if sedentary and f.local_hour not in NIGHT_HOURS:
            calm_actions.append(Action.MOVE)
        return tuple(calm_actions)
    return ()


def energy_budget(f: Features, state: State) -> int:
    """Energy 0-100: start at 70, add what recovery gives, take what load and conditions cost.

    HRV against baseline moves it most (±), then the state (sleep and rest give, exercise
    and stress take), then the environment (thin air above 2,000 m, heat, low SpO2).
    """
    energy = 70.0
    if f.hrv_ratio is not None:
        energy += _clamp((f.hrv_ratio - 1.0) * 50, -30, 15)
    elif f.hrv_mean is not None:
        energy += _clamp((f.hrv_mean - 45) / 2, -20, 10)  # 45 ms: a typical adult RMSSD
    if f.hrv_trend is not None:
        energy += _clamp((f.hrv_trend - 1.0) * 40, -15, 5)
    if state is State.EXERCISING:
        over_rest = f.hr_over_rest if f.hr_over_rest is not None else (f.hr_mean or 65) - 65
        energy -= _clamp(over_rest / 4, 0, 25)
    elif state is State.STRESSED:
        energy -= 15
    elif state is State.SLEEPING:
        energy += 10
    elif state is State.RESTING:
        energy += 5
    elif f.local_hour in NIGHT_HOURS:
        energy -= 5  # awake and about at night
    if f.altitude_m is not None:
        energy -= _clamp((f.altitude_m - 2000) / 300, 0, 10)
    if f.temp_c is not None:
        energy -= _clamp((f.temp_c - 28) * 1.5, 0, 12)
    if f.spo2 is not None:
        energy -= _clamp((95 - f.spo2) * 4, 0, 15)
    return round(_clamp(energy, 0, 100))


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))
