"""Drawing the pet itself for :mod:`brain.avatar.local`: body, ears, face and cues.

Coordinates are design units of a 512 px square, multiplied by ``unit`` when drawn. The pet
is drawn upright on its own transparent layer and then leaned as its posture says, so every
part leans together. Everything here is deterministic: no randomness, no fonts (the ``Z``
letters are polylines, because fonts differ between machines and would change the bytes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw

from brain.avatar.prompt import RGB, Extra, Eyes, Look, Mouth, Posture, Species

Point = tuple[float, float]

INK: RGB = (28, 22, 22)
WHITE: RGB = (255, 255, 255)
PINK: RGB = (250, 178, 188)
MOUTH_RED: RGB = (150, 42, 54)
SWEAT: RGB = (126, 196, 255)


@dataclass(frozen=True, slots=True)
class Pose:
    """Where the body parts sit for a posture, and how far the pet leans."""

    head: Point
    head_r: float
    body: Point
    body_r: Point
    tilt: float
    """Degrees counter-clockwise, as Pillow rotates; negative leans to the right."""
    droop: float
    """Degrees the ears fall outward from upright."""
    feet: tuple[Point, Point] | None


POSES: dict[Posture, Pose] = {
    Posture.UPRIGHT: Pose((256, 205), 108, (256, 345), (88, 78), 0, 0, ((216, 418), (296, 418))),
    Posture.TENSE: Pose((256, 224), 102, (256, 352), (74, 70), 0, 45, ((230, 418), (282, 418))),
    Posture.RUNNING: Pose((272, 205), 104, (250, 342), (90, 74), -12, 25, ((186, 408), (318, 422))),
    Posture.SLUMPED: Pose((256, 248), 106, (256, 354), (98, 70), 6, 65, ((208, 420), (304, 420))),
    Posture.SITTING: Pose((256, 214), 108, (256, 356), (112, 72), 0, 8, ((198, 424), (314, 424))),
    Posture.CURLED_UP: Pose((190, 322), 92, (300, 362), (150, 64), 0, 80, None),
}

MUZZLE: dict[Species, RGB] = {
    Species.FOX: (252, 246, 238),
    Species.CAT: (226, 226, 232),
    Species.BEAR: (214, 176, 136),
    Species.RABBIT: (255, 252, 246),
    Species.PANDA: (255, 255, 255),
}

EAR_INSIDE: dict[Species, RGB] = {
    Species.FOX: (252, 238, 226),
    Species.CAT: PINK,
    Species.BEAR: (204, 150, 110),
    Species.RABBIT: PINK,
    Species.PANDA: (40, 40, 46),
}

PANDA_BLACK: RGB = (40, 40, 46)


class Pen:
    """ImageDraw in design units, with the outline colour and width of the drawing."""

    def __init__(self, draw: ImageDraw.ImageDraw, unit: float, outline: RGB) -> None:
        self.draw, self.unit, self.outline = draw, unit, outline
        self.width = max(1, round(3 * unit))

    def box(self, cx: float, cy: float, rx: float, ry: float) -> list[float]:
        u = self.unit
        return [(cx - rx) * u, (cy - ry) * u, (cx + rx) * u, (cy + ry) * u]

    def ellipse(
        self, cx: float, cy: float, rx: float, ry: float, fill: RGB, line: bool = True
    ) -> None:
        outline = self.outline if line else None
        self.draw.ellipse(self.box(cx, cy, rx, ry), fill=fill, outline=outline, width=self.width)

    def polygon(self, points: Sequence[Point], fill: RGB, line: bool = True) -> None:
        outline = self.outline if line else None
        scaled = [(x * self.unit, y * self.unit) for x, y in points]
        self.draw.polygon(scaled, fill=fill, outline=outline, width=self.width)

    def lines(self, points: Sequence[Point], colour: RGB, width: float) -> None:
        scaled = [(x * self.unit, y * self.unit) for x, y in points]
        self.draw.line(scaled, fill=colour, width=max(1, round(width * self.unit)), joint="curve")

    def arc(self, cx: float, cy: float, rx: float, ry: float, start: float, end: float) -> None:
        width = max(1, round(5 * self.unit))
        self.draw.arc(self.box(cx, cy, rx, ry), start, end, fill=INK, width=width)


def rotated(points: Sequence[Point], degrees: float, origin: Point) -> list[Point]:
    """``points`` turned ``degrees`` clockwise on screen around ``origin``."""
    rad = math.radians(degrees)
    cos, sin = math.cos(rad), math.sin(rad)
    ox, oy = origin
    return [
        (ox + (x - ox) * cos - (y - oy) * sin, oy + (x - ox) * sin + (y - oy) * cos)
        for x, y in points
    ]


def oval(cx: float, cy: float, rx: float, ry: float, steps: int = 40) -> list[Point]:
    """An ellipse as a polygon (so it can be rotated)."""
    return [
        (cx + rx * math.cos(2 * math.pi * i / steps), cy + ry * math.sin(2 * math.pi * i / steps))
        for i in range(steps)
    ]


def draw_pet(look: Look, size: int, unit: float, outline: RGB) -> Image.Image:
    """The pet of ``look`` on a transparent ``size`` x ``size`` layer, leaned by its posture."""
    layer = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    pen = Pen(ImageDraw.Draw(layer), unit, outline)
    pose = POSES[look.posture]
    _tail(pen, look, pose)
    _body(pen, look, pose)
    _ears(pen, look, pose)
    _head(pen, look, pose)
    _eyes(pen, look, pose)
    _mouth(pen, look, pose)
    if Extra.BLUSH in look.extras:
        hx, hy = pose.head
        r = pose.head_r
        for side in (-1, 1):
            pen.ellipse(hx + side * 0.6 * r, hy + 0.24 * r, 0.15 * r, 0.08 * r, PINK, line=False)
    if Extra.SWEAT_DROP in look.extras:
        _sweat_drop(pen, pose)
    if pose.tilt:
        bx, by = pose.body
        layer = layer.rotate(
            pose.tilt, resample=Image.Resampling.BICUBIC, center=(bx * unit, (by + 60) * unit)
        )
    return layer


def _tail(pen: Pen, look: Look, pose: Pose) -> None:
    bx, by = pose.body
    rx, ry = pose.body_r
    root = (bx - rx * 0.85, by + ry * 0.3)
    if look.species is Species.FOX:
        tail = rotated(oval(root[0] - 40, root[1] - 10, 52, 24), -30, root)
        pen.polygon(tail, look.fur.rgb)
        tip = rotated(oval(root[0] - 78, root[1] - 10, 16, 14), -30, root)
        pen.polygon(tip, MUZZLE[Species.FOX])
    elif look.species is Species.CAT:
        curve = [(root[0] - 10 * i, root[1] - 14 * i + 1.2 * i * i) for i in range(7)]
        pen.lines(curve, pen.outline, 14)
        pen.lines(curve, look.fur.rgb, 8)
    else:
        colour = {Species.PANDA: PANDA_BLACK, Species.RABBIT: WHITE}.get(look.species, look.fur.rgb)
        pen.ellipse(root[0] - 6, root[1], 20, 18, colour)


def _body(pen: Pen, look: Look, pose: Pose) -> None:
    bx, by = pose.body
    rx, ry = pose.body_r
    if pose.feet is not None:
        for fx, fy in pose.feet:
            pen.ellipse(fx, fy, 26, 14, _darker(look.fur.rgb))
    pen.ellipse(bx, by, rx, ry, look.fur.rgb)
    # A lighter belly says "front" and keeps the body readable against the glow.
    pen.ellipse(bx, by + ry * 0.15, rx * 0.55, ry * 0.6, MUZZLE[look.species], line=False)
    if pose.feet is not None:
        paw = PANDA_BLACK if look.species is Species.PANDA else look.fur.rgb
        for side in (-1, 1):
            pen.ellipse(bx + side * rx * 0.5, by - ry * 0.05, 16, 22, paw)


def _ears(pen: Pen, look: Look, pose: Pose) -> None:
    hx, hy = pose.head
    r = pose.head_r
    for side in (-1, 1):
        if look.species in (Species.BEAR, Species.PANDA):
            # Round ears slide down the side of the head as they droop.
            angle = math.radians(40 + pose.droop * 0.5)
            ex, ey = hx + side * math.sin(angle) * r * 0.95, hy - math.cos(angle) * r * 0.95
            outer = PANDA_BLACK if look.species is Species.PANDA else look.fur.rgb
            pen.ellipse(ex, ey, 0.34 * r, 0.34 * r, outer)
            pen.ellipse(ex, ey, 0.18 * r, 0.18 * r, EAR_INSIDE[look.species], line=False)
            continue
        base = (hx + side * 0.5 * r, hy - 0.72 * r)
        if look.species is Species.RABBIT:
            shape = oval(base[0], base[1] - 0.7 * r, 0.2 * r, 0.75 * r)
            inner = oval(base[0], base[1] - 0.7 * r, 0.09 * r, 0.55 * r)
            tilt = 8.0
        else:
            width, height = (0.8, 1.0) if look.species is Species.FOX else (0.72, 0.72)
            shape = [
                (base[0] - width * r / 2, base[1] + 0.2 * r),
                (base[0] + width * r / 2, base[1] + 0.2 * r),
                (base[0], base[1] - height * r),
            ]
            inner = [
                (base[0] - width * r / 4, base[1] + 0.1 * r),
                (base[0] + width * r / 4, base[1] + 0.1 * r),
                (base[0], base[1] - height * r * 0.55),
            ]
            tilt = 14.0
        degrees = side * (tilt + pose.droop)
        pen.polygon(rotated(shape, degrees, base), look.fur.rgb)
        pen.polygon(rotated(inner, degrees, base), EAR_INSIDE[look.species], line=False)


def _head(pen: Pen, look: Look, pose: Pose) -> None:
    hx, hy = pose.head
    r = pose.head_r
    pen.ellipse(hx, hy, r, r * 0.92, look.fur.rgb)
    pen.ellipse(hx, hy + 0.36 * r, 0.46 * r, 0.32 * r, MUZZLE[look.species], line=False)
    if look.species is Species.PANDA:
        for side in (-1, 1):
            patch = rotated(
                oval(hx + side * 0.38 * r, hy, 0.2 * r, 0.26 * r),
                side * -25,
                (hx + side * 0.38 * r, hy),
            )
            pen.polygon(patch, PANDA_BLACK, line=False)
    pen.ellipse(hx, hy + 0.2 * r, 0.1 * r, 0.065 * r, INK, line=False)


def _eyes(pen: Pen, look: Look, pose: Pose) -> None:
    hx, hy = pose.head
    r = pose.head_r
    panda = look.species is Species.PANDA
    for side in (-1, 1):
        ex, ey = hx + side * 0.38 * r, hy - 0.02 * r
        if look.eyes is Eyes.HAPPY:
            pen.arc(ex, ey + 0.06 * r, 0.13 * r, 0.11 * r, 200, 340)
        elif look.eyes is Eyes.CLOSED:
            pen.arc(ex, ey - 0.04 * r, 0.13 * r, 0.1 * r, 20, 160)
        elif look.eyes is Eyes.WIDE:
            pen.ellipse(ex, ey, 0.16 * r, 0.16 * r, WHITE)
            pen.ellipse(ex, ey + 0.02 * r, 0.05 * r, 0.05 * r, INK, line=False)
        else:
            big = look.eyes is Eyes.SPARKLING
            er = (0.16 if big else 0.12) * r
            if panda:
                pen.ellipse(ex, ey, er + 0.035 * r, er + 0.035 * r, WHITE, line=False)
            pen.ellipse(ex, ey, er, er, INK, line=False)
            pen.ellipse(ex - 0.35 * er, ey - 0.35 * er, 0.38 * er, 0.38 * er, WHITE, line=False)
            if big:
                pen.ellipse(ex + 0.4 * er, ey + 0.4 * er, 0.18 * er, 0.18 * er, WHITE, line=False)
            if look.eyes is Eyes.HALF_CLOSED:
                lid = PANDA_BLACK if panda else look.fur.rgb
                top = ey - er - 0.05 * r
                pen.polygon(
                    [(ex - er - 4, top), (ex + er + 4, top), (ex + er + 4, ey), (ex - er - 4, ey)],
                    lid,
                    line=False,
                )
                pen.lines([(ex - er - 2, ey), (ex + er + 2, ey)], INK, 5)


def _mouth(pen: Pen, look: Look, pose: Pose) -> None:
    hx, hy = pose.head
    r = pose.head_r
    my = hy + 0.42 * r
    if look.mouth is Mouth.SMILE:
        pen.arc(hx, my - 0.06 * r, 0.22 * r, 0.14 * r, 15, 165)
    elif look.mouth is Mouth.SMALL_SMILE:
        pen.arc(hx, my - 0.04 * r, 0.12 * r, 0.08 * r, 20, 160)
    elif look.mouth is Mouth.GRIN:
        box = pen.box(hx, my, 0.2 * r, 0.16 * r)
        pen.draw.chord(box, 0, 180, fill=MOUTH_RED, outline=INK, width=pen.width)
        pen.ellipse(hx, my + 0.1 * r, 0.08 * r, 0.04 * r, PINK, line=False)
    elif look.mouth is Mouth.WOBBLY:
        xs = [hx - 0.2 * r + 0.1 * r * i for i in range(5)]
        pen.lines([(x, my + (0.03 * r if i % 2 else -0.03 * r)) for i, x in enumerate(xs)], INK, 5)
    elif look.mouth is Mouth.FLAT:
        pen.lines([(hx - 0.14 * r, my + 0.02 * r), (hx + 0.14 * r, my + 0.02 * r)], INK, 5)
    else:
        pen.ellipse(hx, my + 0.04 * r, 0.07 * r, 0.09 * r, MOUTH_RED)


def _sweat_drop(pen: Pen, pose: Pose) -> None:
    hx, hy = pose.head
    r = pose.head_r
    cx, cy = hx + 0.98 * r, hy - 0.35 * r
    drop = [*oval(cx, cy, 0.13 * r, 0.13 * r)[:21], (cx, cy - 0.34 * r)]
    pen.polygon(drop, SWEAT)
    pen.ellipse(cx - 0.04 * r, cy + 0.02 * r, 0.035 * r, 0.035 * r, WHITE, line=False)


def draw_scene_extras(draw: ImageDraw.ImageDraw, look: Look, unit: float, outline: RGB) -> None:
    """Cues drawn on the scene rather than the pet: Zzz, motion lines and sparkles."""
    pen = Pen(draw, unit, outline)
    pose = POSES[look.posture]
    hx, hy = pose.head
    if Extra.ZZZ in look.extras:
        for i, size in enumerate((18.0, 26.0, 36.0)):
            x, y = hx + 90 + 40 * i, hy - 90 - 48 * i
            pen.lines([(x, y), (x + size, y), (x, y + size), (x + size, y + size)], WHITE, 6)
    if Extra.MOTION_LINES in look.extras:
        for i, length in enumerate((70.0, 100.0, 60.0)):
            y = 290.0 + 40 * i
            pen.lines([(120 - length, y), (120, y)], _darker(look.background.rgb), 8)
    if Extra.SPARKLES in look.extras:
        for x, y, s in ((96, 140, 20), (416, 120, 26), (430, 300, 16), (80, 330, 14)):
            star = [
                (x, y - s),
                (x + s / 4, y - s / 4),
                (x + s, y),
                (x + s / 4, y + s / 4),
                (x, y + s),
                (x - s / 4, y + s / 4),
                (x - s, y),
                (x - s / 4, y - s / 4),
            ]
            pen.polygon(star, (255, 250, 210))


def _darker(rgb: RGB) -> RGB:
    return (round(rgb[0] * 0.72), round(rgb[1] * 0.72), round(rgb[2] * 0.72))
