"""What an avatar shows, in words: the spec, its look, the image prompt and the cache hash.

Pure: no I/O, no clock, no randomness. The same :class:`AvatarSpec` always gives the same
:class:`Look`, the same prompt and therefore the same cache hash, on every node, so users
whose pets are in the same situation share one generated image.

The spec holds the energy *band*, not the energy value: energy moves by a point or two all
the time, and a prompt that followed it would miss the cache on every change. The look
tables here are the single source of truth for both generators: the Gemini prompt describes
them in words and the local renderer draws them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from brain.model import EnergyBand, Mood, State


class Species(StrEnum):
    """The base avatars a user may choose (``Profile.base_avatar``)."""

    FOX = "fox"
    CAT = "cat"
    BEAR = "bear"
    RABBIT = "rabbit"
    PANDA = "panda"


class ArtStyle(StrEnum):
    """How the picture is drawn; only the prompt (and so the cache hash) depends on it."""

    KAWAII = "kawaii"
    PIXEL = "pixel"
    WATERCOLOR = "watercolor"


class Eyes(StrEnum):
    """How the eyes are drawn (from the mood; closed while sleeping)."""

    OPEN = "open"
    HAPPY = "happy"
    WIDE = "wide"
    SPARKLING = "sparkling"
    HALF_CLOSED = "half_closed"
    CLOSED = "closed"


class Mouth(StrEnum):
    """How the mouth is drawn (from the mood)."""

    SMILE = "smile"
    SMALL_SMILE = "small_smile"
    GRIN = "grin"
    WOBBLY = "wobbly"
    FLAT = "flat"
    YAWN = "yawn"


class Posture(StrEnum):
    """How the body stands or lies (from the state)."""

    UPRIGHT = "upright"
    TENSE = "tense"
    RUNNING = "running"
    SLUMPED = "slumped"
    SITTING = "sitting"
    CURLED_UP = "curled_up"


class Extra(StrEnum):
    """Small cues drawn around the pet."""

    SWEAT_DROP = "sweat_drop"
    ZZZ = "zzz"
    MOTION_LINES = "motion_lines"
    BLUSH = "blush"
    SPARKLES = "sparkles"


RGB = tuple[int, int, int]
_E = TypeVar("_E", bound=StrEnum)


@dataclass(frozen=True, slots=True)
class Colour:
    """A colour with the name the prompt uses for it."""

    name: str
    rgb: RGB


@dataclass(frozen=True, slots=True)
class AvatarSpec:
    """Everything an avatar depends on. Raises ValueError for an unknown base avatar."""

    state: State
    mood: Mood
    band: EnergyBand
    base_avatar: Species = Species.FOX
    style: ArtStyle = ArtStyle.KAWAII

    @classmethod
    def of(
        cls,
        state: str,
        mood: str,
        energy: int,
        base_avatar: str = Species.FOX.value,
        style: str = ArtStyle.KAWAII.value,
    ) -> AvatarSpec:
        """A spec from stored values (strings and an energy 0-100).

        Raises ValueError naming the accepted values when one is not in its vocabulary.
        """
        return cls(
            state=_parse(State, state, "state"),
            mood=_parse(Mood, mood, "mood"),
            band=EnergyBand.of(energy),
            base_avatar=_parse(Species, base_avatar, "base avatar"),
            style=_parse(ArtStyle, style, "art style"),
        )


def _parse(enum: type[_E], value: str, what: str) -> _E:
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(member.value for member in enum)
        raise ValueError(f"unknown {what} {value!r}; expected one of: {allowed}") from None


@dataclass(frozen=True, slots=True)
class Look:
    """What the picture shows, decided from a spec by :func:`look_of`."""

    species: Species
    eyes: Eyes
    mouth: Mouth
    posture: Posture
    extras: tuple[Extra, ...]
    fur: Colour
    background: Colour
    halo: Colour
    energy_fill: float
    energy_colour: Colour


FUR: dict[Species, Colour] = {
    Species.FOX: Colour("warm orange", (232, 121, 49)),
    Species.CAT: Colour("soft grey", (150, 150, 160)),
    Species.BEAR: Colour("chestnut brown", (150, 96, 60)),
    Species.RABBIT: Colour("cream", (240, 228, 208)),
    Species.PANDA: Colour("white", (246, 246, 242)),
}

SPECIES_WORDS: dict[Species, str] = {
    Species.FOX: "fox cub with tall pointed ears and a white muzzle",
    Species.CAT: "kitten with triangular ears with pink insides",
    Species.BEAR: "bear cub with small round ears",
    Species.RABBIT: "bunny with long upright ears",
    Species.PANDA: "panda cub with round black ears and black eye patches",
}

BACKGROUND: dict[State, Colour] = {
    State.CALM: Colour("soft mint green", (200, 236, 214)),
    State.STRESSED: Colour("pale peach", (252, 214, 190)),
    State.EXERCISING: Colour("sunny yellow", (255, 232, 140)),
    State.FATIGUED: Colour("dusty lavender", (214, 204, 228)),
    State.RESTING: Colour("pale sky blue", (196, 224, 246)),
    State.SLEEPING: Colour("deep night blue", (40, 52, 96)),
}

HALO: dict[Mood, Colour] = {
    Mood.HAPPY: Colour("warm gold", (255, 214, 102)),
    Mood.CONTENT: Colour("light green", (170, 222, 170)),
    Mood.ANXIOUS: Colour("muted orange", (240, 170, 120)),
    Mood.ENERGIZED: Colour("bright coral", (255, 128, 102)),
    Mood.TIRED: Colour("grey blue", (160, 170, 196)),
    Mood.SLEEPY: Colour("indigo", (92, 100, 170)),
}

EYES: dict[Mood, Eyes] = {
    Mood.HAPPY: Eyes.HAPPY,
    Mood.CONTENT: Eyes.OPEN,
    Mood.ANXIOUS: Eyes.WIDE,
    Mood.ENERGIZED: Eyes.SPARKLING,
    Mood.TIRED: Eyes.HALF_CLOSED,
    Mood.SLEEPY: Eyes.HALF_CLOSED,
}

MOUTH: dict[Mood, Mouth] = {
    Mood.HAPPY: Mouth.SMILE,
    Mood.CONTENT: Mouth.SMALL_SMILE,
    Mood.ANXIOUS: Mouth.WOBBLY,
    Mood.ENERGIZED: Mouth.GRIN,
    Mood.TIRED: Mouth.FLAT,
    Mood.SLEEPY: Mouth.YAWN,
}

POSTURE: dict[State, Posture] = {
    State.CALM: Posture.UPRIGHT,
    State.STRESSED: Posture.TENSE,
    State.EXERCISING: Posture.RUNNING,
    State.FATIGUED: Posture.SLUMPED,
    State.RESTING: Posture.SITTING,
    State.SLEEPING: Posture.CURLED_UP,
}

STATE_EXTRAS: dict[State, tuple[Extra, ...]] = {
    State.STRESSED: (Extra.SWEAT_DROP,),
    State.EXERCISING: (Extra.MOTION_LINES,),
    State.SLEEPING: (Extra.ZZZ,),
}

MOOD_EXTRAS: dict[Mood, tuple[Extra, ...]] = {
    Mood.HAPPY: (Extra.BLUSH,),
    Mood.ENERGIZED: (Extra.SPARKLES,),
}

ENERGY: dict[EnergyBand, tuple[float, Colour]] = {
    EnergyBand.LOW: (1 / 3, Colour("red", (222, 64, 56))),
    EnergyBand.MID: (2 / 3, Colour("amber", (240, 170, 30))),
    EnergyBand.HIGH: (1.0, Colour("green", (60, 176, 80))),
}


def look_of(spec: AvatarSpec) -> Look:
    """The look of a spec: the face follows the mood, the body and scene follow the state."""
    # A sleeping pet has its eyes shut whatever the mood: open eyes would contradict the Zzz.
    eyes = Eyes.CLOSED if spec.state is State.SLEEPING else EYES[spec.mood]
    fill, energy_colour = ENERGY[spec.band]
    return Look(
        species=spec.base_avatar,
        eyes=eyes,
        mouth=MOUTH[spec.mood],
        posture=POSTURE[spec.state],
        extras=STATE_EXTRAS.get(spec.state, ()) + MOOD_EXTRAS.get(spec.mood, ()),
        fur=FUR[spec.base_avatar],
        background=BACKGROUND[spec.state],
        halo=HALO[spec.mood],
        energy_fill=fill,
        energy_colour=energy_colour,
    )


STYLE_WORDS: dict[ArtStyle, str] = {
    ArtStyle.KAWAII: "soft kawaii flat vector illustration with thick rounded dark outlines",
    ArtStyle.PIXEL: "crisp pixel-art sprite with a limited palette and no anti-aliasing",
    ArtStyle.WATERCOLOR: "gentle watercolour children's-book illustration with soft edges",
}

EYES_WORDS: dict[Eyes, str] = {
    Eyes.OPEN: "round shiny eyes",
    Eyes.HAPPY: "eyes squeezed into happy upturned arcs",
    Eyes.WIDE: "wide worried eyes with small pupils",
    Eyes.SPARKLING: "big sparkling eyes with bright highlights",
    Eyes.HALF_CLOSED: "heavy half-closed eyelids",
    Eyes.CLOSED: "peacefully closed eyes drawn as curved lines",
}

MOUTH_WORDS: dict[Mouth, str] = {
    Mouth.SMILE: "a wide cheerful smile",
    Mouth.SMALL_SMILE: "a small relaxed smile",
    Mouth.GRIN: "an open excited grin",
    Mouth.WOBBLY: "a wobbly uneasy mouth",
    Mouth.FLAT: "a flat weary mouth",
    Mouth.YAWN: "a small round yawning mouth",
}

POSTURE_WORDS: dict[Posture, str] = {
    Posture.UPRIGHT: "standing upright and relaxed",
    Posture.TENSE: "hunched with raised shoulders and flattened ears",
    Posture.RUNNING: "leaning forward mid-stride as if jogging",
    Posture.SLUMPED: "slumped forward with drooping ears",
    Posture.SITTING: "sitting comfortably with paws in its lap",
    Posture.CURLED_UP: "curled up lying down asleep",
}

EXTRA_WORDS: dict[Extra, str] = {
    Extra.SWEAT_DROP: "a single light-blue sweat drop beside its head",
    Extra.ZZZ: "a trail of white 'Z Z Z' letters floating up from its head",
    Extra.MOTION_LINES: "short speed lines behind its body",
    Extra.BLUSH: "rosy pink cheeks",
    Extra.SPARKLES: "small four-pointed sparkles around it",
}


def build_prompt(spec: AvatarSpec) -> str:
    """The image prompt for a spec: one paragraph, the same words for the same spec."""
    look = look_of(spec)
    parts = [
        f"A {STYLE_WORDS[spec.style]} of a cute {look.fur.name} {SPECIES_WORDS[look.species]},"
        " a companion pet, centred and facing the viewer.",
        f"Face: {EYES_WORDS[look.eyes]} and {MOUTH_WORDS[look.mouth]}.",
        f"Posture: {POSTURE_WORDS[look.posture]}.",
    ]
    if look.extras:
        parts.append("Details: " + ", ".join(EXTRA_WORDS[e] for e in look.extras) + ".")
    parts += [
        f"Background: plain {look.background.name}, with a soft {look.halo.name} glow"
        " behind the pet.",
        f"Below the pet, a rounded horizontal energy bar filled {_fraction(look.energy_fill)}"
        f" in {look.energy_colour.name} ({spec.band.value} energy).",
        "Square 1:1 image, simple shapes that stay readable on a small watch screen,"
        " no other text or letters.",
    ]
    return " ".join(parts)


def _fraction(fill: float) -> str:
    if fill >= 1.0:
        return "completely"
    return "two thirds of the way" if fill > 0.5 else "one third of the way"


def cache_hash(prompt: str, base_avatar: str) -> str:
    """The avatar cache key: sha256 hex of the prompt followed by the base avatar id."""
    return hashlib.sha256((prompt + base_avatar).encode("utf-8")).hexdigest()
