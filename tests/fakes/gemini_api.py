"""A local fake of the Gemini API, for running the real ``google-genai`` SDK against.

:class:`FakeGeminiApi` is a real HTTP server (Starlette under uvicorn, on 127.0.0.1, in a
background thread) that answers the REST calls the SDK makes, in the shapes the real API
uses (camelCase JSON, base64 ``inlineData``, ``{"error": {code, message, status}}``):

``POST /{version}/models/{model}:generateContent`` answers with one candidate whose parts are
a short text and an inline PNG (1024 px, as the model sends), with ``finishReason``,
``usageMetadata``, ``modelVersion`` and ``responseId``. Other methods get the API's 404.

A request without the expected ``x-goog-api-key`` gets the API's 400 ``INVALID_ARGUMENT``.
Tests script the next ``generateContent`` answers with :meth:`FakeGeminiApi.fail`,
:meth:`~FakeGeminiApi.hang` (held until :meth:`~FakeGeminiApi.release`, which teardown also
calls: nothing here sleeps), :meth:`~FakeGeminiApi.refuse` and
:meth:`~FakeGeminiApi.answer_text`; unscripted calls succeed. Every request is recorded.

Use it as a context manager (``with FakeGeminiApi() as api:``); ``api.base_url`` goes into
``HttpOptions(base_url=...)`` or ``GOOGLE_GEMINI_BASE_URL``.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageDraw
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.server import FakeServer

API_KEY = "fake-gemini-key"
STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


@functools.cache
def sample_png(size: int = 1024) -> bytes:
    """A square PNG like the model's answer (1024 px by default): a pet-ish blob on colour."""
    image = Image.new("RGB", (size, size), (200, 236, 214))
    draw = ImageDraw.Draw(image)
    draw.ellipse([size * 0.25, size * 0.2, size * 0.75, size * 0.7], fill=(232, 121, 49))
    draw.rectangle([size * 0.2, size * 0.85, size * 0.8, size * 0.9], fill=(60, 176, 80))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake received."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def prompt(self) -> str | None:
        """The first text part of the request's ``contents``."""
        for content in self.body.get("contents", []):
            for part in content.get("parts", []):
                if "text" in part:
                    return str(part["text"])
        return None


@dataclass
class _Step:
    kind: str  # "fail", "hang", "refuse", "text"
    status: int = 500


@dataclass
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    steps: deque[_Step] = field(default_factory=deque)
    requests: list[RecordedRequest] = field(default_factory=list)
    generate_calls: int = 0


class FakeGeminiApi(FakeServer):
    """The fake server; see the module docstring. Not started until :meth:`start`."""

    name = "fake Gemini API"

    def __init__(self, *, image: bytes | None = None, api_key: str = API_KEY) -> None:
        super().__init__()
        self.image = image if image is not None else sample_png()
        self.api_key = api_key
        self.hung = threading.Event()
        """Set when a request starts hanging (so a test can see it arrived)."""
        self._state = _State()

    # -- scripting -------------------------------------------------------------------

    def fail(self, status: int, times: int = 1) -> None:
        """Answer the next ``times`` generateContent calls with HTTP ``status``."""
        self._script(_Step("fail", status), times)

    def hang(self, times: int = 1) -> None:
        """Hold the next ``times`` generateContent calls until :meth:`release`."""
        self._script(_Step("hang"), times)

    def refuse(self, times: int = 1) -> None:
        """Answer the next calls as a blocked image (``finishReason: IMAGE_SAFETY``)."""
        self._script(_Step("refuse"), times)

    def answer_text(self, times: int = 1) -> None:
        """Answer the next calls with text only, as the model sometimes does."""
        self._script(_Step("text"), times)

    def _script(self, step: _Step, times: int) -> None:
        with self._state.lock:
            self._state.steps.extend([step] * times)

    # -- what happened ---------------------------------------------------------------

    @property
    def calls(self) -> int:
        """How many generateContent requests arrived."""
        with self._state.lock:
            return self._state.generate_calls

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request so far, oldest first."""
        with self._state.lock:
            return list(self._state.requests)

    # -- lifecycle -------------------------------------------------------------------

    # -- the API ---------------------------------------------------------------------

    def _app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/{version}/models/{target}", self._model_call, methods=["POST"]),
            ]
        )

    async def _record(self, request: Request) -> Response | None:
        raw = await request.body()
        body = json.loads(raw) if raw else {}
        recorded = RecordedRequest(request.method, request.url.path, dict(request.headers), body)
        with self._state.lock:
            self._state.requests.append(recorded)
        if request.headers.get("x-goog-api-key") != self.api_key:
            return _error(400, "API key not valid. Please pass a valid API key.")
        return None

    async def _model_call(self, request: Request) -> Response:
        refused = await self._record(request)
        if refused is not None:
            return refused
        model, _, action = request.path_params["target"].partition(":")
        if action != "generateContent":
            return _error(404, f"Method {action!r} not found on this fake.")
        with self._state.lock:
            self._state.generate_calls += 1
            number = self._state.generate_calls
            step = self._state.steps.popleft() if self._state.steps else None
        if step is not None and step.kind == "hang":
            assert self._released is not None
            self.hung.set()
            await self._released.wait()
        elif step is not None and step.kind == "fail":
            return _error(step.status, f"Scripted failure {step.status}.")
        parts: list[dict[str, Any]] = [{"text": "Here is your companion."}]
        finish = "STOP"
        if step is not None and step.kind == "refuse":
            parts, finish = [], "IMAGE_SAFETY"
        elif step is None or step.kind != "text":
            encoded = base64.b64encode(self.image).decode("ascii")
            parts.append({"inlineData": {"mimeType": "image/png", "data": encoded}})
        candidate: dict[str, Any] = {"finishReason": finish, "index": 0}
        if parts:
            candidate["content"] = {"parts": parts, "role": "model"}
        return JSONResponse(
            {
                "candidates": [candidate],
                "usageMetadata": {
                    "promptTokenCount": 60,
                    "candidatesTokenCount": 1290,
                    "totalTokenCount": 1350,
                    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 60}],
                    "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": 1290}],
                },
                "modelVersion": model,
                "responseId": f"fake-response-{number}",
            }
        )


def _error(status: int, message: str) -> JSONResponse:
    name = STATUS_NAMES.get(status, "UNKNOWN")
    return JSONResponse(
        {"error": {"code": status, "message": message, "status": name}}, status_code=status
    )
