"""Avatar building blocks: the prompt, the generators and what they return.

- :mod:`brain.avatar.prompt` (pure): :class:`AvatarSpec` -> :func:`build_prompt` and
  :func:`cache_hash`, plus the look tables both generators follow.
- :mod:`brain.avatar.base`: the :class:`ImageGenerator` protocol and :class:`GeneratedImage`.
- :mod:`brain.avatar.local`: ``LocalRenderer``, the embedded default (Pillow, no network).
- :mod:`brain.avatar.gemini`: ``GeminiGenerator``, a Gemini image model via ``google-genai``.
- :mod:`brain.avatar.clip`: the :class:`ClipMaker` protocol and :class:`Clip` (a short loop
  of the avatar); ``LocalClipMaker`` (:mod:`brain.avatar.clip_local`, an animated WebP drawn
  with Pillow) and ``VeoClipMaker`` (:mod:`brain.avatar.veo`, Veo on Vertex AI) make them.
- :mod:`brain.avatar.errors`: :class:`GenerationError` with its ``retryable`` flag.

The generators and clip makers are imported from their modules, so that importing this
package does not load the Google SDK. The saga that runs them and commits the result lives
in the server.
"""

from brain.avatar.base import PHONE_SIZE, WATCH_SIZE, GeneratedImage, ImageGenerator
from brain.avatar.clip import Clip, ClipMaker
from brain.avatar.errors import AvatarError, GenerationError
from brain.avatar.prompt import ArtStyle, AvatarSpec, Species, build_prompt, cache_hash

__all__ = [
    "PHONE_SIZE",
    "WATCH_SIZE",
    "ArtStyle",
    "AvatarError",
    "AvatarSpec",
    "Clip",
    "ClipMaker",
    "GeneratedImage",
    "GenerationError",
    "ImageGenerator",
    "Species",
    "build_prompt",
    "cache_hash",
]
