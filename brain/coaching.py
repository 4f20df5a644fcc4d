"""How the coach says it: the readable ``reasoning`` of a rules assessment.

A reasoning is two sentences: what the numbers show, phrased per :class:`~brain.model.CoachTone`
(``direct`` states the figures tersely, ``gentle`` speaks to the user), and what to do about
it, phrased per :class:`~brain.model.CoachStyle` (strict, encouraging, neutral). It always
quotes the numbers it rests on, and stays within :data:`MAX_REASONING` characters, the same
limit the LLM analyst's answers are held to.
"""

from __future__ import annotations

from brain.features import Features
from brain.model import Action, CoachStyle, CoachTone, Profile, State

MAX_REASONING = 300
"""The longest reasoning a device is asked to show (the LLM is held to the same)."""

_ADVICE: dict[tuple[State, CoachStyle], str] = {
    (State.STRESSED, CoachStyle.STRICT): "Stop and do a two-minute breathing session now.",
    (State.STRESSED, CoachStyle.ENCOURAGING): "A two-minute breathing break will reset you.",
    (State.STRESSED, CoachStyle.NEUTRAL): "A short breathing session is suggested.",
    (State.EXERCISING, CoachStyle.STRICT): "Hold the pace.",
    (State.EXERCISING, CoachStyle.ENCOURAGING): "Great work, keep it up!",
    (State.EXERCISING, CoachStyle.NEUTRAL): "Workout in progress.",
    (State.FATIGUED, CoachStyle.STRICT): "Rest today and skip the hard session.",
    (State.FATIGUED, CoachStyle.ENCOURAGING): "Be kind to yourself: rest is how you get stronger.",
    (State.FATIGUED, CoachStyle.NEUTRAL): "Rest or a lighter day is suggested.",
    (State.SLEEPING, CoachStyle.STRICT): "Stay in bed.",
    (State.SLEEPING, CoachStyle.ENCOURAGING): "Sleep well, you are recharging nicely.",
    (State.SLEEPING, CoachStyle.NEUTRAL): "Sleep in progress.",
    (State.RESTING, CoachStyle.STRICT): "Use the rest, then get moving again.",
    (State.RESTING, CoachStyle.ENCOURAGING): "Enjoy the rest, you have earned it.",
    (State.RESTING, CoachStyle.NEUTRAL): "Resting.",
    (State.CALM, CoachStyle.STRICT): "Steady. Keep it that way.",
    (State.CALM, CoachStyle.ENCOURAGING): "Nice and steady, keep it up!",
    (State.CALM, CoachStyle.NEUTRAL): "All steady.",
}

_DOWNGRADE: dict[CoachStyle, str] = {
    CoachStyle.STRICT: "Recovery is poor: cut the intensity now.",
    CoachStyle.ENCOURAGING: "Your body is still recovering, so go easier today.",
    CoachStyle.NEUTRAL: "HRV is very low; a lighter workout is suggested.",
}

_EXTRAS: dict[Action, dict[CoachStyle, str]] = {
    Action.HYDRATE: {
        CoachStyle.STRICT: "Drink water.",
        CoachStyle.ENCOURAGING: "Remember to drink some water.",
        CoachStyle.NEUTRAL: "Hydrate.",
    },
    Action.MOVE: {
        CoachStyle.STRICT: "Get up and move.",
        CoachStyle.ENCOURAGING: "A short stretch would feel good.",
        CoachStyle.NEUTRAL: "Consider moving a little.",
    },
}


def reasoning(
    f: Features, state: State, profile: Profile, *, actions: tuple[Action, ...], energy: int
) -> str:
    """One or two sentences for ``state``: the numbers (per tone), then advice (per style)."""
    gentle = profile.tone is CoachTone.GENTLE
    facts = _facts(f, state, gentle=gentle, energy=energy)
    if Action.DOWNGRADE_WORKOUT in actions and state is State.EXERCISING:
        advice = _DOWNGRADE[profile.style]
    else:
        advice = _ADVICE[(state, profile.style)]
    extras = [_EXTRAS[a][profile.style] for a in actions if a in _EXTRAS]
    return _fit(" ".join([facts, advice, *extras]))


NO_DATA = "Not enough data yet"
"""How the reasoning of an assessment without enough frames begins."""
FIRST_IMPRESSION = "First impression"
"""How the reasoning of an assessment from less than the rules' minimum span begins."""


def no_data_reasoning(f: Features) -> str:
    """The reasoning when there is too little data to tell anything but calm."""
    return (
        f"{NO_DATA} ({f.count} frames over {f.span_min:.0f} min), "
        "so assuming calm until more arrives."
    )


def first_impression(f: Features, said: str) -> str:
    """``said`` prefixed with the thin evidence it rests on (a short window: lower confidence)."""
    return _fit(f"{FIRST_IMPRESSION} ({f.count} frames over {f.span_ms / 1000:.0f} s): {said}")


def evidence(text: str) -> str:
    """What a reasoning rests on: ``"none"`` (also a state nobody assessed yet), ``"first"``
    (a short window) or ``"full"``."""
    if not text or text.startswith(NO_DATA):
        return "none"
    if text.startswith(FIRST_IMPRESSION):
        return "first"
    return "full"


def _facts(f: Features, state: State, *, gentle: bool, energy: int) -> str:
    hr = f"{f.hr_mean or 0:.0f} bpm"
    if f.hr_slope is None and f.hr_rise_recent is not None:
        slope = f"{round(f.hr_rise_recent) or 0:+d} bpm just now"  # too short for a slope
    else:
        slope = f"{round(f.hr_slope or 0.0, 1) or 0.0:+.1f} bpm/min"  # no "-0.0"
    steps = f"{f.steps_per_min or 0:.0f} steps/min"
    if state is State.STRESSED:
        if gentle:
            return f"Your heart rate has climbed to {hr} ({slope}) while you sat still."
        return f"HR {hr}, rising {slope}, at {steps}: stress, not movement."
    if state is State.EXERCISING:
        climb = ""
        if (f.altitude_gain_m or 0) >= 1 and f.altitude_m is not None:
            climb = f", {f.altitude_gain_m:.0f} m climbed to {f.altitude_m:.0f} m"
        if gentle:
            return f"You are moving at {steps} with your heart at {hr}{climb}."
        return f"HR {hr} at {steps}{climb}."
    if state is State.FATIGUED:
        return _fatigue_facts(f, gentle=gentle)
    if state is State.SLEEPING:
        if gentle:
            return f"You seem asleep: heart at {hr}, no movement at {f.local_hour:02d}:00."
        return f"HR {hr}, still, {f.local_hour:02d}:00: asleep."
    if state is State.RESTING:
        if gentle:
            return f"You are resting with your heart at {hr}."
        return f"HR {hr}, still: resting."
    if gentle:
        return f"Your heart is steady at {hr} ({slope}); energy {energy}/100."
    return f"HR {hr}, {slope}, {steps}, energy {energy}/100."


def _fatigue_facts(f: Features, *, gentle: bool) -> str:
    hrv = f"{f.hrv_mean or 0:.0f} ms"
    if f.hrv_ratio is None:
        detail = f"HRV {hrv} is low"
    else:
        detail = f"HRV {hrv} is {f.hrv_ratio:.0%} of your baseline"
        if f.hrv_trend is not None and f.hrv_trend < 1:
            detail += f" and has fallen to {f.hrv_trend:.0%} over recent days"
    if gentle:
        return f"Your body needs recovery: {detail}."
    return f"{detail}: fatigued."


def _fit(text: str) -> str:
    """``text`` cut at a word boundary to :data:`MAX_REASONING` characters."""
    if len(text) <= MAX_REASONING:
        return text
    return text[: MAX_REASONING - 1].rsplit(" ", 1)[0] + "…"
