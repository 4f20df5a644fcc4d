"""The LLM's system prompt: who the companion is for this user, and where the user is.

:func:`persona` depends only on the :class:`~brain.model.Profile` (coach style, tone, base
avatar), so it is part of the answer cache key: two users with the same persona and the
same rounded features can share an answer. :func:`environment` describes the surroundings
in words; :func:`system_blocks` puts both together with the instructions, static parts
first and marked for Anthropic's prompt cache.
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

from brain.analyst.base import AnalysisRequest
from brain.coaching import MAX_REASONING
from brain.model import CoachStyle, CoachTone, Profile


class CacheControl(TypedDict):
    """Anthropic's prompt-cache breakpoint marker (the 5-minute cache)."""

    type: Literal["ephemeral"]


class SystemBlock(TypedDict):
    """A text block of the system prompt, in the Messages API's shape."""

    type: Literal["text"]
    text: str
    cache_control: NotRequired[CacheControl]


_STYLE: dict[CoachStyle, str] = {
    CoachStyle.STRICT: (
        "You are a strict coach: short, firm instructions, no sugar-coating, no exclamation marks."
    ),
    CoachStyle.ENCOURAGING: (
        "You are an encouraging coach: warm and positive, you notice effort and celebrate it."
    ),
    CoachStyle.NEUTRAL: "You are a neutral coach: factual and calm, without judgement.",
}

_TONE: dict[CoachTone, str] = {
    CoachTone.DIRECT: "Be direct and terse: figures first, few words.",
    CoachTone.GENTLE: "Be gentle: speak to the user as 'you', in plain everyday words.",
}

_INSTRUCTIONS = f"""\
You read a wearable's sensor summary for the last 15 minutes and decide how the user is \
doing. Always answer by calling the record_assessment tool, never with text.
- state: exercising (moving, HR up), stressed (HR rising while still), fatigued (HRV well \
below the user's baseline), sleeping, resting, or calm.
- mood: how the companion pet looks in that state.
- energy: 0-100, what the user has left today: rest and good HRV give, exercise, stress, \
altitude, heat and low SpO2 take.
- actions: at most three suggestions, or none.
- reasoning: one or two sentences (at most {MAX_REASONING} characters) in your coaching \
voice that mention the numbers you relied on. No diagnosis, no medical advice.
- The *_recent fields (the newest frames) say what the user does now: let them outweigh \
the whole window when the two disagree. When span_ms is under 180000, decide anyway and \
begin the reasoning with "First impression" (the window is short)."""


def persona(profile: Profile) -> str:
    """The coach persona for ``profile``: the companion's species, style and tone."""
    article = "an" if profile.base_avatar[:1].lower() in "aeiou" else "a"
    return (
        f"You speak as the user's companion pet, {article} {profile.base_avatar}. "
        f"{_STYLE[profile.style]} {_TONE[profile.tone]}"
    )


def environment(request: AnalysisRequest) -> str:
    """The user's surroundings and local time, in one line of words."""
    f = request.features
    env = request.env
    altitude = env.altitude_m if env and env.altitude_m is not None else f.altitude_m
    temp = env.temp_c if env and env.temp_c is not None else f.temp_c
    humidity = env.humidity_pct if env and env.humidity_pct is not None else f.humidity_pct
    speed = env.speed_mps if env and env.speed_mps is not None else f.speed_mps
    weather = env.weather if env and env.weather is not None else f.weather
    parts = [f"local time {f.local_hour:02d}:00"]
    if altitude is not None:
        climb = f" ({f.altitude_gain_m:+.0f} m in the window)" if f.altitude_gain_m else ""
        parts.append(f"altitude {altitude:.0f} m{climb}")
    if temp is not None:
        parts.append(f"{temp:.0f} °C")
    if humidity is not None:
        parts.append(f"{humidity:.0f}% humidity")
    if weather:
        parts.append(weather)
    if speed is not None:
        parts.append(f"moving at {speed:.1f} m/s")
    return "Environment: " + ", ".join(parts) + "."


def system_blocks(request: AnalysisRequest) -> list[SystemBlock]:
    """The system prompt as text blocks, what never changes first, for prompt caching.

    The instructions are the same for every user, the persona for every user of the same
    profile (a handful of combinations): both end with a cache breakpoint
    (``cache_control``), so the API can serve them, and the tool schema before them, from
    its prompt cache. The environment changes with every window and comes last, uncached.
    """
    return [
        {"type": "text", "text": _INSTRUCTIONS, "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": persona(request.profile), "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": environment(request)},
    ]


def system_prompt(request: AnalysisRequest) -> str:
    """The whole system prompt as one text: the blocks of :func:`system_blocks`, joined."""
    return "\n\n".join(block["text"] for block in system_blocks(request))
