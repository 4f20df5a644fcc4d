"""The clip maker interface: a short looping video of an avatar, and what it returns.

A clip goes beside the still image of the same avatar (same cache hash) and shows the same
pet in motion: breathing, bouncing, a loop a watch can play. Two implementations:
:class:`brain.avatar.clip_local.LocalClipMaker` (the embedded default: an animated WebP drawn
with Pillow, no network) and :class:`brain.avatar.veo.VeoClipMaker` (Veo on Vertex AI through
``google-genai``, an MP4).

A maker raises only :class:`~brain.avatar.errors.GenerationError` (``retryable`` says whether
trying again may help), like the image generators: the saga owns retries and treats a failed
clip as a failed clip, never as a failed image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from brain.avatar.prompt import AvatarSpec

CLIP_TYPES = frozenset({"image/webp", "image/gif", "video/mp4", "video/webm"})
"""Content types a clip may have: what the media store knows an extension for, and what a
watch or a browser can play."""

LOOP_DIRECTION = (
    " Animate this scene as a seamless short loop for a smartwatch face: the pet breathes"
    " gently and bounces in place, its expression unchanged; the camera and the background"
    " stay still; no text, no sound."
)
"""What a video model is told on top of the image prompt."""


@dataclass(frozen=True, slots=True)
class Clip:
    """One clip: its bytes, their content type, and the model that made it.

    Raises ValueError for an empty clip or a content type outside :data:`CLIP_TYPES`.
    """

    data: bytes
    content_type: str
    model: str

    def __post_init__(self) -> None:
        if not self.data:
            raise ValueError("a clip needs bytes")
        if self.content_type not in CLIP_TYPES:
            raise ValueError(
                f"clip type must be one of {', '.join(sorted(CLIP_TYPES))},"
                f" got {self.content_type!r}"
            )


class ClipMaker(Protocol):
    """Turns an avatar (its prompt, spec and still image) into a short looping clip."""

    async def make_clip(self, prompt: str, spec: AvatarSpec, still: bytes | None) -> Clip:
        """Make the clip; ``still`` is the avatar's phone PNG when the caller has it.

        Raises :class:`~brain.avatar.errors.GenerationError`.
        """
        ...

    async def aclose(self) -> None:
        """Release connections; idempotent."""
        ...


def clip_prompt(image_prompt: str) -> str:
    """The prompt of the clip of the avatar ``image_prompt`` describes."""
    return image_prompt.rstrip() + LOOP_DIRECTION
