"""The embedded clip maker: the pet breathing and bouncing, an animated WebP drawn with Pillow.

:class:`LocalClipMaker` draws the same scene as :class:`~brain.avatar.local.LocalRenderer`
(same look tables, same pet) and moves the pet over :data:`FRAMES` frames: it hops, breathes
(a small squash and stretch) or trembles, as its posture says (:data:`MOTIONS`); the scene,
the cues and the energy bar stay still. The result is a looping animated WebP of
:data:`CLIP_SIZE` px, :data:`FRAMES` x :data:`FRAME_MS` ms (1.5 s), typically 40-65 KB:
small enough for a watch to fetch over a phone's Bluetooth link, and played natively by
browsers, Android and watchOS image views.

Drawing is pure and deterministic (the same spec gives the same bytes) and CPU-bound
(0.12-0.2 s), so :meth:`LocalClipMaker.make_clip` runs it in a worker thread.
"""

from __future__ import annotations

import asyncio
import io
import math
from dataclasses import dataclass

from PIL import Image, ImageDraw

from brain.avatar.clip import Clip
from brain.avatar.local import DESIGN_SIZE, OUTLINE, draw_backdrop, draw_foreground
from brain.avatar.pet import draw_pet
from brain.avatar.prompt import AvatarSpec, Posture, look_of

MODEL_NAME = "local-pillow-clip-v1"
"""The ``model`` of clips this maker draws; bump it when the animation changes."""

CLIP_SIZE = 256
"""Edge of the square clip, in pixels."""

DRAW_SIZE = 512
"""Edge of the canvas each frame is drawn on before it is reduced to :data:`CLIP_SIZE`."""

FRAMES = 12
FRAME_MS = 125
"""Frames per loop and how long each shows: a 1.5 s loop at 8 frames per second."""

WEBP_QUALITY = 70
CONTENT_TYPE = "image/webp"

GROUND_Y = 430.0
"""Where (in design units) the pet stands: squash and stretch keep this line in place."""


@dataclass(frozen=True, slots=True)
class Motion:
    """How a posture moves, in design units: hops per loop and their height, breathing
    (relative stretch of the height) and a sideways tremble."""

    hops: int
    hop: float
    breath: float
    tremble: float


MOTIONS: dict[Posture, Motion] = {
    Posture.RUNNING: Motion(hops=2, hop=26.0, breath=0.03, tremble=0.0),
    Posture.UPRIGHT: Motion(hops=1, hop=14.0, breath=0.025, tremble=0.0),
    Posture.TENSE: Motion(hops=0, hop=0.0, breath=0.02, tremble=4.0),
    Posture.SITTING: Motion(hops=0, hop=0.0, breath=0.035, tremble=0.0),
    Posture.SLUMPED: Motion(hops=0, hop=0.0, breath=0.03, tremble=0.0),
    Posture.CURLED_UP: Motion(hops=0, hop=0.0, breath=0.045, tremble=0.0),
}


class LocalClipMaker:
    """Draws avatar clips locally; implements :class:`~brain.avatar.clip.ClipMaker`."""

    model = MODEL_NAME

    async def make_clip(self, prompt: str, spec: AvatarSpec, still: bytes | None) -> Clip:
        """The clip of ``spec`` (prompt and still are not read: the spec says it all)."""
        del prompt, still
        data = await asyncio.to_thread(render_clip, spec)
        return Clip(data, CONTENT_TYPE, MODEL_NAME)

    async def aclose(self) -> None:
        """Nothing to release."""


def render_frames(spec: AvatarSpec, size: int = CLIP_SIZE) -> list[Image.Image]:
    """The :data:`FRAMES` frames of the clip of ``spec``, RGB, ``size`` px squares."""
    look = look_of(spec)
    unit = DRAW_SIZE / DESIGN_SIZE
    backdrop = Image.new("RGB", (DRAW_SIZE, DRAW_SIZE), look.background.rgb)
    draw_backdrop(ImageDraw.Draw(backdrop), look, unit)
    pet = draw_pet(look, DRAW_SIZE, unit, OUTLINE)
    motion = MOTIONS[look.posture]
    frames = []
    for index in range(FRAMES):
        phase = index / FRAMES
        frame = backdrop.copy()
        moved, at = _moved(pet, motion, phase, unit)
        frame.paste(moved, at, moved)
        draw_foreground(ImageDraw.Draw(frame), look, unit)
        frames.append(frame.resize((size, size), Image.Resampling.LANCZOS))
    return frames


def render_clip(spec: AvatarSpec) -> bytes:
    """The clip of ``spec`` as looping animated WebP bytes."""
    frames = render_frames(spec)
    out = io.BytesIO()
    frames[0].save(
        out,
        format="WEBP",
        save_all=True,
        append_images=frames[1:],
        duration=FRAME_MS,
        loop=0,
        quality=WEBP_QUALITY,
        method=4,
    )
    return out.getvalue()


def _moved(
    pet: Image.Image, motion: Motion, phase: float, unit: float
) -> tuple[Image.Image, tuple[int, int]]:
    """The pet layer at ``phase`` (0..1) of the loop, and where to paste it."""
    turn = 2 * math.pi * phase
    # Breathing: taller and a little narrower, then back, once per loop; the feet stay on
    # the ground line, so the pet swells upwards instead of sinking.
    stretch = motion.breath * math.sin(turn)
    scale_x, scale_y = 1 - stretch / 2, 1 + stretch
    lift = motion.hop * abs(math.sin(math.pi * motion.hops * phase)) if motion.hops else 0.0
    # A tremble goes left and right three times per loop.
    shift = motion.tremble * math.sin(3 * turn)
    size = pet.width
    width, height = round(size * scale_x), round(size * scale_y)
    moved = pet if (width, height) == pet.size else pet.resize((width, height))
    ground = GROUND_Y * unit
    left = round(size / 2 - width / 2 + shift * unit)
    top = round(ground - ground * scale_y - lift * unit)
    return moved, (left, top)
