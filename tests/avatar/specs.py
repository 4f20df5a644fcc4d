"""The avatar spec the avatar tests start from: a calm, content fox at mid energy."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from brain.avatar.prompt import ArtStyle, AvatarSpec, Species
from brain.model import EnergyBand, Mood, State

BASE = AvatarSpec(
    state=State.CALM,
    mood=Mood.CONTENT,
    band=EnergyBand.MID,
    base_avatar=Species.FOX,
    style=ArtStyle.KAWAII,
)


def spec(**changes: Any) -> AvatarSpec:
    """:data:`BASE` with some fields changed."""
    return replace(BASE, **changes)
