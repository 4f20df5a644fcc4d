"""Avatars from a Gemini image model, through Google's official ``google-genai`` SDK.

:class:`GeminiGenerator` sends the prompt to ``models/{model}:generateContent`` asking for an
image answer, takes the first inline part with an ``image/*`` type, and reduces it with
Pillow to the phone and watch PNGs. Every failure leaves as a
:class:`~brain.avatar.errors.GenerationError` whose ``retryable`` says whether trying again
may help (HTTP 408/429/5xx, timeouts and dropped connections: yes; refusals, bad keys and
undecodable answers: no). The generator does not retry by itself (the SDK's own retries are
off too): the saga owns the retry policy, its backoff and its budget.

Configuration follows the SDK's standard variables: the key from ``GOOGLE_API_KEY`` or
``GEMINI_API_KEY`` (``GOOGLE_API_KEY`` wins when both are set, as in the SDK), the endpoint
from ``GOOGLE_GEMINI_BASE_URL`` (the SDK reads it too, in ``google.genai._base_url``; it is
resolved here explicitly so that an argument overrides it and the choice is visible).

Clips are not made here: ``google-genai`` offers ``generate_videos`` (Veo) only in Vertex AI
mode and raises ValueError for a Gemini API key; :mod:`brain.avatar.veo` makes them.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable
from typing import TypeVar

import httpx
from google import genai
from google.genai import errors, types

from brain.avatar.base import GeneratedImage, both_sizes, decode_image
from brain.avatar.errors import GenerationError
from brain.avatar.prompt import AvatarSpec

DEFAULT_MODEL = "gemini-2.5-flash-image"
API_VERSION = "v1beta"
"""Image output is served on v1beta; the SDK's own default version (v1) is not used."""

BLOCKED_FINISH_REASONS = frozenset(
    {"SAFETY", "IMAGE_SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "RECITATION"}
)

_T = TypeVar("_T")


class GeminiGenerator:
    """Generates avatars with a Gemini image model; an ``ImageGenerator``.

    Raises ValueError at construction when no API key is given or found in the environment.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        model: str = DEFAULT_MODEL,
        timeout_s: float = 120.0,
    ) -> None:
        key = api_key or os.environ.get("GOOGLE_API_KEY") or os.environ.get("GEMINI_API_KEY")
        if not key:
            raise ValueError("Gemini needs an API key: pass api_key or set GEMINI_API_KEY")
        base_url = base_url or os.environ.get("GOOGLE_GEMINI_BASE_URL") or None
        self.model = model
        self.timeout_s = timeout_s
        # Our own httpx client: the SDK's aiohttp transport (used whenever aiohttp is
        # installed) warns on every session it opens, and owning the client lets us bound
        # its timeout and close it for certain. retry_options=None keeps the SDK from
        # retrying: retries belong to the saga.
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(timeout_s))
        self._client = genai.Client(
            api_key=key,
            http_options=types.HttpOptions(
                base_url=base_url,
                api_version=API_VERSION,
                timeout=round(timeout_s * 1000),
                httpx_async_client=self._http,
            ),
        )
        self._closed = False

    async def generate(self, prompt: str, spec: AvatarSpec) -> GeneratedImage:
        """Generate the avatar for ``prompt``; raises GenerationError."""
        del spec  # the prompt already says everything the model needs
        response = await self._call(
            self._client.aio.models.generate_content(
                model=self.model,
                contents=prompt,
                config=types.GenerateContentConfig(
                    response_modalities=["IMAGE"],
                    image_config=types.ImageConfig(aspect_ratio="1:1"),
                ),
            ),
        )
        data = first_image(response, self.model)
        # Decoding and resampling a 1024 px image takes tens of milliseconds: off the loop.
        phone, watch = await asyncio.to_thread(lambda: both_sizes(decode_image(data)))
        return GeneratedImage(phone_png=phone, watch_png=watch, model=self.model)

    async def aclose(self) -> None:
        """Close the SDK's HTTP clients; idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._client.aio.aclose()
        await self._http.aclose()  # the SDK leaves a client it was given open
        self._client.close()

    async def _call(self, request: Awaitable[_T]) -> _T:
        """Await an SDK call within the timeout, mapping failures to GenerationError."""
        try:
            async with asyncio.timeout(self.timeout_s):
                return await request
        except errors.APIError as exc:
            code = exc.code
            retryable = code in (408, 429) or code >= 500
            raise GenerationError(
                f"Gemini request failed: {code} {exc.status}: {exc.message}",
                retryable=retryable,
                status=code,
            ) from exc
        except TimeoutError as exc:
            raise GenerationError(
                f"Gemini request took longer than {self.timeout_s:g}s", retryable=True
            ) from exc
        except httpx.TransportError as exc:
            raise GenerationError(
                f"Gemini request failed on the network: {exc!r}", retryable=True
            ) from exc
        except errors.UnknownApiResponseError as exc:
            # Not JSON: typically a proxy or load balancer answering for the API.
            raise GenerationError(f"Gemini answered garbage: {exc}", retryable=True) from exc


def first_image(response: types.GenerateContentResponse, model: str) -> bytes:
    """The bytes of the first inline image part of ``response``.

    Raises GenerationError: not retryable when the prompt or the image was blocked,
    retryable when the model merely answered without an image (it sometimes answers text).
    """
    feedback = response.prompt_feedback
    if feedback is not None and feedback.block_reason is not None:
        raise GenerationError(
            f"{model} refused the prompt: {feedback.block_reason.value}", retryable=False
        )
    for candidate in response.candidates or ():
        for part in (candidate.content.parts if candidate.content else None) or ():
            blob = part.inline_data
            if blob and blob.data and (blob.mime_type or "").startswith("image/"):
                return blob.data
        reason = candidate.finish_reason.value if candidate.finish_reason else None
        if reason in BLOCKED_FINISH_REASONS:
            raise GenerationError(f"{model} blocked the image: {reason}", retryable=False)
    raise GenerationError(f"{model} answered without an image", retryable=True)
