"""The embedded avatar generator: draws the pet with Pillow, no network, no key.

:class:`LocalRenderer` draws the :class:`~brain.avatar.prompt.Look` of a spec (the same
tables the Gemini prompt describes): the species' ears and muzzle, eyes and mouth from the
mood, posture and scene colour from the state, cues such as a sweat drop, ``Zzz`` or motion
lines, a glow in the mood's colour and an energy bar filled by the energy band.

The picture is drawn once on a 1024 px master (so the downscales are anti-aliased) in design
units of a 512 px square, then reduced to the phone and watch sizes. Drawing is pure and
deterministic: the same spec gives byte-identical PNGs. It is CPU-bound (tens of
milliseconds), so :meth:`LocalRenderer.generate` runs it in a worker thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from PIL import Image, ImageDraw

from brain.avatar.base import PHONE_SIZE, WATCH_SIZE, GeneratedImage, square_png
from brain.avatar.pet import draw_pet, draw_scene_extras
from brain.avatar.prompt import AvatarSpec, Look, look_of

MODEL_NAME = "local-pillow-v1"
"""The ``model`` of images this renderer makes; bump it when the drawing changes."""

MASTER_SIZE = 1024
"""Edge of the canvas the picture is drawn on before it is reduced to the screen sizes."""

DESIGN_SIZE = 512
"""Edge of the square the drawing coordinates are written in."""

OUTLINE = (58, 40, 40)


class LocalRenderer:
    """Draws avatars locally; implements :class:`~brain.avatar.base.ImageGenerator`."""

    model = MODEL_NAME

    async def generate(self, prompt: str, spec: AvatarSpec) -> GeneratedImage:
        """Draw the avatar of ``spec`` (the prompt is not read: the spec says it all)."""
        del prompt
        phone, watch = await asyncio.to_thread(render_pngs, spec)
        return GeneratedImage(phone_png=phone, watch_png=watch, model=MODEL_NAME)

    async def aclose(self) -> None:
        """Nothing to release."""


def render_pngs(spec: AvatarSpec) -> tuple[bytes, bytes]:
    """The phone and watch PNGs of ``spec`` (512 and 192 px squares)."""
    master = render(spec)
    return square_png(master, PHONE_SIZE), square_png(master, WATCH_SIZE)


def render(spec: AvatarSpec, size: int = MASTER_SIZE) -> Image.Image:
    """The avatar of ``spec`` as an RGB image of ``size`` x ``size`` pixels."""
    look = look_of(spec)
    unit = size / DESIGN_SIZE
    scene = Image.new("RGB", (size, size), look.background.rgb)
    draw_backdrop(ImageDraw.Draw(scene), look, unit)
    pet = draw_pet(look, size, unit, OUTLINE)
    scene.paste(pet, (0, 0), pet)
    draw_foreground(ImageDraw.Draw(scene), look, unit)
    return scene


def draw_backdrop(draw: ImageDraw.ImageDraw, look: Look, unit: float) -> None:
    """What lies behind the pet: the halo in the mood's colour (the scene colour is the
    canvas's)."""
    _draw_halo(draw, look, unit)


def draw_foreground(draw: ImageDraw.ImageDraw, look: Look, unit: float) -> None:
    """What lies in front of the pet: the scene cues (Zzz, motion lines…) and the energy bar."""
    draw_scene_extras(draw, look, unit, OUTLINE)
    _draw_energy_bar(draw, look, unit)


def _mix(a: tuple[int, int, int], b: tuple[int, int, int], t: float) -> tuple[int, int, int]:
    """``a`` moved a fraction ``t`` of the way to ``b``."""
    return (
        round(a[0] + (b[0] - a[0]) * t),
        round(a[1] + (b[1] - a[1]) * t),
        round(a[2] + (b[2] - a[2]) * t),
    )


def _box(cx: float, cy: float, rx: float, ry: float, unit: float) -> list[float]:
    return [(cx - rx) * unit, (cy - ry) * unit, (cx + rx) * unit, (cy + ry) * unit]


def _draw_halo(draw: ImageDraw.ImageDraw, look: Look, unit: float) -> None:
    # Two rings of the mood colour, faded into the background, so the mood reads at a
    # glance even on a watch where the face is a few pixels wide.
    outer = _mix(look.background.rgb, look.halo.rgb, 0.45)
    inner = _mix(look.background.rgb, look.halo.rgb, 0.8)
    draw.ellipse(_box(256, 250, 200, 200, unit), fill=outer)
    draw.ellipse(_box(256, 250, 160, 160, unit), fill=inner)


def _draw_energy_bar(draw: ImageDraw.ImageDraw, look: Look, unit: float) -> None:
    left, right, top, bottom = 120.0, 408.0, 452.0, 482.0
    radius = (bottom - top) / 2 * unit
    draw.rounded_rectangle(
        [left * unit, top * unit, right * unit, bottom * unit],
        radius=radius,
        fill=(250, 248, 244),
        outline=OUTLINE,
        width=max(1, round(4 * unit)),
    )
    inset = 5.0
    fill_right = left + inset + (right - left - 2 * inset) * look.energy_fill
    draw.rounded_rectangle(
        [(left + inset) * unit, (top + inset) * unit, fill_right * unit, (bottom - inset) * unit],
        radius=radius - inset * unit,
        fill=look.energy_colour.rgb,
    )
    bolt = [(96, 446), (78, 470), (90, 470), (84, 490), (104, 462), (92, 462), (100, 446)]
    draw.polygon(_scaled(bolt, unit), fill=look.energy_colour.rgb, outline=OUTLINE, width=2)


def _scaled(points: Sequence[tuple[float, float]], unit: float) -> list[tuple[float, float]]:
    return [(x * unit, y * unit) for x, y in points]
