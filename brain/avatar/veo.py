"""Avatar clips from Veo on Vertex AI, through Google's official ``google-genai`` SDK.

``google-genai`` runs ``generate_videos`` only in its Vertex AI mode, so
:class:`VeoClipMaker` builds a ``genai.Client(vertexai=True, ...)``: with an API key
(Vertex AI *express mode*) or with a Google Cloud project and location (credentials from
Application Default Credentials, which the SDK loads itself). It:

1. submits ``models/{model}:predictLongRunning`` with the clip prompt and, when it has it,
   the avatar's still as the first frame (image-to-video keeps the clip true to the image);
2. polls the long-running operation (``client.aio.operations.get``, which the SDK sends as
   ``{model}:fetchPredictOperation``) every ``poll_s`` until it is done, all within one
   deadline (``timeout_s``); a poll that fails on the way (a 5xx, a dropped connection) is
   polled again, so a transient error never throws away a clip already paid for;
3. takes the first video's bytes (Vertex answers them base64-encoded inline when no
   ``storageUri`` is asked for, and this maker never asks for one), checks their size and
   that an MP4 looks like one.

Failures leave as :class:`~brain.avatar.errors.GenerationError`: retryable for HTTP
408/429/5xx on submit, operation errors with a transient gRPC code, dropped connections and
an answer without a video; not retryable for refusals (safety filters), bad keys or
arguments, a result in Cloud Storage, and a missed deadline (a new operation would be paid
for again; the next saga of the same avatar tries again).

Configuration follows the SDK's standard variables: ``GOOGLE_CLOUD_PROJECT`` and
``GOOGLE_CLOUD_LOCATION`` (project mode), else ``GOOGLE_API_KEY`` / ``GEMINI_API_KEY``
(express mode), and ``GOOGLE_VERTEX_BASE_URL`` for the endpoint (resolved here explicitly, as
:mod:`brain.avatar.gemini` does, so that an argument overrides it and the choice is visible).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx
from google import genai
from google.genai import errors, types

from brain.avatar.clip import CLIP_TYPES, Clip, clip_prompt
from brain.avatar.errors import GenerationError
from brain.avatar.prompt import AvatarSpec

DEFAULT_MODEL = "veo-3.0-fast-generate-001"
DEFAULT_LOCATION = "us-central1"
"""Where project mode runs Veo when ``GOOGLE_CLOUD_LOCATION`` names no region."""

ASPECT_RATIO = "9:16"
"""Portrait: watches and phones hold the pet upright (Veo offers 16:9 and 9:16 only)."""

NEGATIVE_PROMPT = "text, captions, watermark, logo, extra animals, people"

MAX_CLIP_BYTES = 32 * 1024 * 1024
"""Largest clip accepted from Veo (a 4-8 s 720p MP4 is a few megabytes)."""

RETRYABLE_OPERATION_CODES = frozenset({4, 8, 10, 13, 14})
"""gRPC codes of an operation error worth another try: DEADLINE_EXCEEDED,
RESOURCE_EXHAUSTED, ABORTED, INTERNAL, UNAVAILABLE."""

Sleep = Callable[[float], Awaitable[None]]
_T = TypeVar("_T")


class VeoClipMaker:
    """Makes avatar clips with Veo on Vertex AI; a :class:`~brain.avatar.clip.ClipMaker`.

    Raises ValueError at construction when neither a project nor an API key is given or
    found in the environment.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        project: str | None = None,
        location: str | None = None,
        base_url: str | None = None,
        model: str = DEFAULT_MODEL,
        timeout_s: float = 360.0,
        poll_s: float = 10.0,
        request_timeout_s: float = 60.0,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        project = project or os.environ.get("GOOGLE_CLOUD_PROJECT") or None
        key = api_key or os.environ.get("GOOGLE_API_KEY") or os.environ.get("GEMINI_API_KEY")
        if not project and not key:
            raise ValueError(
                "Veo needs Vertex AI: set GOOGLE_CLOUD_PROJECT (and GOOGLE_CLOUD_LOCATION)"
                " or an express-mode API key in GOOGLE_API_KEY"
            )
        base_url = base_url or os.environ.get("GOOGLE_VERTEX_BASE_URL") or None
        self.model = model
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self._sleep = sleep
        # Our own httpx client, as in brain.avatar.gemini: a bounded timeout per request
        # and a client we can close for certain. The SDK does not retry (no retry_options).
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(request_timeout_s))
        http_options = types.HttpOptions(
            base_url=base_url,
            timeout=round(request_timeout_s * 1000),
            httpx_async_client=self._http,
        )
        if project:
            location = location or os.environ.get("GOOGLE_CLOUD_LOCATION") or DEFAULT_LOCATION
            self._client = genai.Client(
                vertexai=True, project=project, location=location, http_options=http_options
            )
        else:
            self._client = genai.Client(vertexai=True, api_key=key, http_options=http_options)
        self._closed = False

    async def make_clip(self, prompt: str, spec: AvatarSpec, still: bytes | None) -> Clip:
        """Generate the clip of the avatar ``prompt`` describes; raises GenerationError."""
        del spec  # the prompt already says everything the model needs
        source = types.GenerateVideosSource(
            prompt=clip_prompt(prompt),
            image=None if still is None else types.Image(image_bytes=still, mime_type="image/png"),
        )
        config = types.GenerateVideosConfig(
            number_of_videos=1,
            duration_seconds=4 if self.model.startswith("veo-3") else 5,
            aspect_ratio=ASPECT_RATIO,
            negative_prompt=NEGATIVE_PROMPT,
            # Veo 3 adds sound unless told not to; a watch face plays none, and Veo 2
            # refuses the parameter altogether.
            generate_audio=False if self.model.startswith("veo-3") else None,
        )
        try:
            async with asyncio.timeout(self.timeout_s):
                operation = await self._call(
                    self._client.aio.models.generate_videos(
                        model=self.model, source=source, config=config
                    )
                )
                while not operation.done:
                    await self._sleep(self.poll_s)
                    operation = await self._poll(operation)
        except TimeoutError as exc:
            raise GenerationError(
                f"{self.model} clip not done within {self.timeout_s:g}s", retryable=False
            ) from exc
        return self._clip_of(operation)

    async def aclose(self) -> None:
        """Close the SDK's HTTP clients; idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._client.aio.aclose()
        await self._http.aclose()  # the SDK leaves a client it was given open
        self._client.close()

    async def _poll(
        self, operation: types.GenerateVideosOperation
    ) -> types.GenerateVideosOperation:
        """The operation's latest state; on a transient failure, the operation as it was
        (the caller polls again after ``poll_s``, within its deadline)."""
        try:
            return await self._call(self._client.aio.operations.get(operation))
        except GenerationError as exc:
            if not exc.retryable:
                raise
            return operation

    async def _call(self, request: Awaitable[_T]) -> _T:
        """Await one SDK request, mapping its failures to GenerationError."""
        try:
            return await request
        except errors.APIError as exc:
            code = exc.code
            raise GenerationError(
                f"Veo request failed: {code} {exc.status}: {exc.message}",
                retryable=code in (408, 429) or code >= 500,
                status=code,
            ) from exc
        except httpx.TransportError as exc:
            raise GenerationError(
                f"Veo request failed on the network: {exc!r}", retryable=True
            ) from exc
        except errors.UnknownApiResponseError as exc:
            raise GenerationError(f"Veo answered garbage: {exc}", retryable=True) from exc

    def _clip_of(self, operation: types.GenerateVideosOperation) -> Clip:
        """The clip a finished operation holds. Raises GenerationError."""
        if operation.error:
            code = operation.error.get("code")
            message = operation.error.get("message", "")
            raise GenerationError(
                f"Veo operation failed: {code}: {message}",
                retryable=code in RETRYABLE_OPERATION_CODES,
            )
        result = operation.response or operation.result
        videos = (result.generated_videos if result else None) or []
        if not videos or videos[0].video is None:
            if result is not None and result.rai_media_filtered_count:
                reasons = "; ".join(result.rai_media_filtered_reasons or ()) or "no reason given"
                raise GenerationError(f"Veo filtered the clip: {reasons}", retryable=False)
            raise GenerationError("Veo finished without a video", retryable=True)
        video = videos[0].video
        if not video.video_bytes:
            where = "Cloud Storage" if (video.uri or "").startswith("gs://") else "a URI"
            raise GenerationError(
                f"Veo put the clip in {where}, not inline; no storage URI may be configured",
                retryable=False,
            )
        return checked_clip(video.video_bytes, video.mime_type or "video/mp4", self.model)


def checked_clip(data: bytes, content_type: str, model: str) -> Clip:
    """A :class:`Clip` of ``data`` once it passed the size and type checks.

    Raises GenerationError (not retryable) for a clip over :data:`MAX_CLIP_BYTES`, a type
    outside :data:`~brain.avatar.clip.CLIP_TYPES`, or an "MP4" without an ``ftyp`` box.
    """
    if len(data) > MAX_CLIP_BYTES:
        raise GenerationError(
            f"clip of {len(data)} bytes is larger than {MAX_CLIP_BYTES}", retryable=False
        )
    if content_type not in CLIP_TYPES:
        raise GenerationError(f"clip of unplayable type {content_type!r}", retryable=False)
    if content_type == "video/mp4" and data[4:8] != b"ftyp":
        raise GenerationError("clip claims to be MP4 but has no ftyp box", retryable=False)
    return Clip(data, content_type, model)
