"""The image generator interface, what it returns, and the PNG codec both generators share.

Two implementations: :class:`brain.avatar.local.LocalRenderer` (the embedded default, draws
with Pillow) and :class:`brain.avatar.gemini.GeminiGenerator` (Gemini image model). Both hand
back a :class:`GeneratedImage` with one PNG per screen size, so the saga stores and serves
them the same way whichever drew them.

PNGs are encoded by :func:`encode_png` without any metadata chunk (no time, no software
name), so the same pixels always give the same bytes and the same content-addressed key.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Protocol

from PIL import Image

from brain.avatar.errors import GenerationError
from brain.avatar.prompt import AvatarSpec

PHONE_SIZE = 512
"""Edge of the square phone image, in pixels."""

WATCH_SIZE = 192
"""Edge of the square watch image, in pixels."""

MAX_SOURCE_PIXELS = 4096 * 4096
"""Largest image a generator accepts from upstream; more is refused before decoding."""


@dataclass(frozen=True, slots=True)
class GeneratedImage:
    """One avatar still: PNG bytes per screen size, and who made it (its clip, if any, comes
    from a :class:`~brain.avatar.clip.ClipMaker`)."""

    phone_png: bytes
    watch_png: bytes
    model: str


class ImageGenerator(Protocol):
    """Turns a prompt (and the spec it was built from) into an avatar."""

    async def generate(self, prompt: str, spec: AvatarSpec) -> GeneratedImage:
        """Generate the avatar; raises :class:`~brain.avatar.errors.GenerationError`."""
        ...

    async def aclose(self) -> None:
        """Release connections; idempotent."""
        ...


def encode_png(image: Image.Image) -> bytes:
    """PNG bytes of ``image`` with no metadata chunks, so equal pixels give equal bytes."""
    out = io.BytesIO()
    # No pnginfo and no optimize: Pillow then writes only IHDR/IDAT/IEND (plus PLTE/tRNS
    # for palette images), never tIME or tEXt, and zlib is deterministic for a given level.
    image.save(out, format="PNG", compress_level=6)
    return out.getvalue()


def square_png(image: Image.Image, size: int) -> bytes:
    """``image`` centre-cropped to a square and resized to ``size`` x ``size``, as PNG."""
    width, height = image.size
    edge = min(width, height)
    left, top = (width - edge) // 2, (height - edge) // 2
    square = image.crop((left, top, left + edge, top + edge))
    if square.size != (size, size):
        square = square.resize((size, size), Image.Resampling.LANCZOS)
    return encode_png(square)


def decode_image(data: bytes) -> Image.Image:
    """Decode image bytes from upstream into an RGB(A) image.

    Raises :class:`GenerationError` (not retryable) when the bytes are not an image or the
    image is larger than :data:`MAX_SOURCE_PIXELS` (checked before the pixels are decoded).
    """
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > MAX_SOURCE_PIXELS:
            raise GenerationError(
                f"image of {width}x{height} pixels is larger than {MAX_SOURCE_PIXELS}",
                retryable=False,
            )
        image.load()
    except GenerationError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise GenerationError(f"undecodable image: {exc}", retryable=False) from exc
    return image.convert("RGBA" if "A" in image.getbands() else "RGB")


def both_sizes(image: Image.Image) -> tuple[bytes, bytes]:
    """The phone and watch PNGs of ``image``."""
    return square_png(image, PHONE_SIZE), square_png(image, WATCH_SIZE)
