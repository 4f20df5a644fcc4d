"""The avatar prompt and cache hash: pure functions, tested without an event loop."""

from __future__ import annotations

import hashlib

import pytest

from brain.avatar.prompt import (
    ArtStyle,
    AvatarSpec,
    Extra,
    Eyes,
    Species,
    build_prompt,
    cache_hash,
    look_of,
)
from brain.model import EnergyBand, Mood, State
from tests.avatar.specs import spec


def test_the_same_spec_always_gives_the_same_prompt() -> None:
    assert build_prompt(spec()) == build_prompt(spec())


def test_prompt_describes_species_face_posture_cues_colours_energy_and_style() -> None:
    prompt = build_prompt(
        spec(
            state=State.STRESSED,
            mood=Mood.ANXIOUS,
            band=EnergyBand.LOW,
            base_avatar=Species.CAT,
            style=ArtStyle.PIXEL,
        )
    )

    assert "kitten" in prompt
    assert "wide worried eyes" in prompt
    assert "wobbly uneasy mouth" in prompt
    assert "hunched" in prompt
    assert "sweat drop" in prompt
    assert "pale peach" in prompt
    assert "energy bar filled one third of the way in red (low energy)" in prompt
    assert "pixel-art" in prompt


@pytest.mark.parametrize(
    ("field", "values"),
    [
        ("state", list(State)),
        ("mood", list(Mood)),
        ("band", list(EnergyBand)),
        ("base_avatar", list(Species)),
        ("style", list(ArtStyle)),
    ],
)
def test_every_value_of_every_field_gives_a_different_prompt(
    field: str, values: list[object]
) -> None:
    prompts = {build_prompt(spec(**{field: value})) for value in values}

    assert len(prompts) == len(values)


def test_energy_moving_within_its_band_keeps_the_prompt() -> None:
    assert build_prompt(AvatarSpec.of("calm", "happy", 67)) == build_prompt(
        AvatarSpec.of("calm", "happy", 100)
    )
    assert build_prompt(AvatarSpec.of("calm", "happy", 66)) != build_prompt(
        AvatarSpec.of("calm", "happy", 67)
    )


def test_cache_hash_is_the_sha256_of_the_prompt_followed_by_the_base_avatar() -> None:
    prompt = build_prompt(spec())

    expected = hashlib.sha256((prompt + "fox").encode("utf-8")).hexdigest()
    assert cache_hash(prompt, "fox") == expected
    assert len(cache_hash(prompt, "fox")) == 64


def test_cache_hash_differs_by_base_avatar_for_the_same_prompt() -> None:
    assert cache_hash("a prompt", "fox") != cache_hash("a prompt", "cat")


def test_a_sleeping_pet_has_closed_eyes_and_zzz_whatever_its_mood() -> None:
    look = look_of(spec(state=State.SLEEPING, mood=Mood.ENERGIZED))

    assert look.eyes is Eyes.CLOSED
    assert Extra.ZZZ in look.extras


def test_the_face_follows_the_mood_and_the_cues_follow_the_state() -> None:
    look = look_of(spec(state=State.EXERCISING, mood=Mood.HAPPY))

    assert look.eyes is Eyes.HAPPY
    assert Extra.MOTION_LINES in look.extras
    assert Extra.BLUSH in look.extras


def test_spec_of_parses_stored_strings_and_an_energy_value() -> None:
    parsed = AvatarSpec.of("fatigued", "tired", 20, "bear", "watercolor")

    assert parsed == AvatarSpec(
        State.FATIGUED, Mood.TIRED, EnergyBand.LOW, Species.BEAR, ArtStyle.WATERCOLOR
    )


def test_spec_of_rejects_an_unknown_base_avatar_naming_the_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown base avatar 'dragon'.*fox, cat, bear"):
        AvatarSpec.of("calm", "happy", 50, "dragon")


def test_spec_of_rejects_an_unknown_state() -> None:
    with pytest.raises(ValueError, match="unknown state 'dancing'"):
        AvatarSpec.of("dancing", "happy", 50)
