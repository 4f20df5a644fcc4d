"""A local fake of Veo on Vertex AI, for running the real ``google-genai`` SDK against.

:class:`FakeVertexApi` is a real HTTP server (Starlette under uvicorn, on 127.0.0.1, in a
background thread, on the harness of :mod:`tests.fakes.server`) that answers the two REST
calls the SDK makes for ``generate_videos`` in Vertex mode, in the shapes Vertex uses:

``POST /{version}/publishers/google/models/{model}:predictLongRunning`` (express mode; the
project mode path ``/{version}/projects/{p}/locations/{l}/publishers/google/models/...`` is
served too) takes ``{instances: [{prompt, image?}], parameters: {...}}`` and answers
``{name}``, an operation name ``projects/…/models/{model}/operations/{id}``.

Polls are ``POST /{version}/projects/{p}/locations/{l}/publishers/google/models/{model}``
``:fetchPredictOperation`` with ``{operationName}``. They answer ``{name, done: false}`` for
the first :attr:`~FakeVertexApi.polls_before_done` polls, then ``{name, done: true,
response: {"@type", videos: [{bytesBase64Encoded, mimeType}]}}``. The video is a small MP4
(an ``ftyp`` box and an ``mdat`` box) whose bytes depend on the prompt, so different avatars
get different clips.

A request without the expected ``x-goog-api-key`` gets 401 ``UNAUTHENTICATED``. Tests script
the next operations with :meth:`~FakeVertexApi.fail_submit`, :meth:`~FakeVertexApi.hang`
(held until :meth:`~FakeVertexApi.release`, which teardown also calls: nothing here sleeps),
:meth:`~FakeVertexApi.fail_poll`, :meth:`~FakeVertexApi.end_with_error`,
:meth:`~FakeVertexApi.filter`, :meth:`~FakeVertexApi.never_finish` and
:meth:`~FakeVertexApi.answer_gcs_uri`; unscripted calls succeed. Every request is recorded.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.gemini_api import STATUS_NAMES, RecordedRequest
from tests.fakes.server import FakeServer

API_KEY = "fake-vertex-key"
PROJECT = "fake-project"
LOCATION = "us-central1"
RESPONSE_TYPE = "type.googleapis.com/cloud.ai.large_models.vision.GenerateVideoResponse"


def sample_mp4(prompt: str) -> bytes:
    """A tiny ISO media file for ``prompt``: an ``ftyp`` box, then an ``mdat`` box whose
    payload is the prompt's sha256 (so each prompt gets its own clip)."""
    ftyp = b"ftyp" + b"isom" + (512).to_bytes(4, "big") + b"isomiso2avc1mp41"
    payload = hashlib.sha256(prompt.encode()).digest() * 8
    mdat = b"mdat" + payload
    return (len(ftyp) + 4).to_bytes(4, "big") + ftyp + (len(mdat) + 4).to_bytes(4, "big") + mdat


@dataclass
class _Operation:
    name: str
    prompt: str
    outcome: str  # "video", "error", "filter", "never", "gcs"
    code: int = 0
    polls: int = 0


@dataclass
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    submit_steps: deque[tuple[str, int]] = field(default_factory=deque)
    poll_failures: deque[int] = field(default_factory=deque)
    outcomes: deque[tuple[str, int]] = field(default_factory=deque)
    operations: dict[str, _Operation] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)
    submits: int = 0
    polls: int = 0


class FakeVertexApi(FakeServer):
    """The fake server; see the module docstring. Not started until :meth:`start`."""

    name = "fake Vertex API"

    def __init__(self, *, api_key: str = API_KEY, polls_before_done: int = 1) -> None:
        super().__init__()
        self.api_key = api_key
        self.polls_before_done = polls_before_done
        self.hung = threading.Event()
        """Set when a submit starts hanging (so a test can see it arrived)."""
        self._state = _State()

    # -- scripting -------------------------------------------------------------------

    def fail_submit(self, status: int, times: int = 1) -> None:
        """Answer the next ``times`` predictLongRunning calls with HTTP ``status``."""
        with self._state.lock:
            self._state.submit_steps.extend([("fail", status)] * times)

    def hang(self, times: int = 1) -> None:
        """Hold the next ``times`` predictLongRunning calls until :meth:`release`."""
        with self._state.lock:
            self._state.submit_steps.extend([("hang", 0)] * times)

    def fail_poll(self, status: int, times: int = 1) -> None:
        """Answer the next ``times`` fetchPredictOperation calls with HTTP ``status``."""
        with self._state.lock:
            self._state.poll_failures.extend([status] * times)

    def end_with_error(self, code: int, times: int = 1) -> None:
        """End the next operations with ``{error: {code}}`` (a gRPC code)."""
        self._outcome("error", code, times)

    def filter(self, times: int = 1) -> None:
        """End the next operations with every video filtered by the safety filters."""
        self._outcome("filter", 0, times)

    def never_finish(self, times: int = 1) -> None:
        """Keep the next operations ``done: false`` for ever."""
        self._outcome("never", 0, times)

    def answer_gcs_uri(self, times: int = 1) -> None:
        """End the next operations with a ``gcsUri`` instead of inline bytes."""
        self._outcome("gcs", 0, times)

    def _outcome(self, kind: str, code: int, times: int) -> None:
        with self._state.lock:
            self._state.outcomes.extend([(kind, code)] * times)

    # -- what happened ---------------------------------------------------------------

    @property
    def submits(self) -> int:
        """How many predictLongRunning requests arrived."""
        with self._state.lock:
            return self._state.submits

    @property
    def polls(self) -> int:
        """How many fetchPredictOperation requests arrived."""
        with self._state.lock:
            return self._state.polls

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request so far, oldest first."""
        with self._state.lock:
            return list(self._state.requests)

    def submitted(self) -> list[RecordedRequest]:
        """The predictLongRunning requests so far, oldest first."""
        return [r for r in self.requests if r.path.endswith(":predictLongRunning")]

    # -- the API ---------------------------------------------------------------------

    def _app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/{version}/publishers/google/models/{target}", self._call, methods=["POST"]),
                Route(
                    "/{version}/projects/{project}/locations/{location}/publishers/google/models/{target}",
                    self._call,
                    methods=["POST"],
                ),
            ]
        )

    async def _call(self, request: Request) -> Response:
        raw = await request.body()
        body = json.loads(raw) if raw else {}
        recorded = RecordedRequest(request.method, request.url.path, dict(request.headers), body)
        with self._state.lock:
            self._state.requests.append(recorded)
        if request.headers.get("x-goog-api-key") != self.api_key:
            return _error(401, "API keys are not supported by this API or the key is invalid.")
        model, _, action = request.path_params["target"].partition(":")
        if action == "predictLongRunning":
            return await self._submit(model, body)
        if action == "fetchPredictOperation":
            return self._poll(body)
        return _error(404, f"Method {action!r} not found on this fake.")

    async def _submit(self, model: str, body: dict[str, Any]) -> Response:
        with self._state.lock:
            self._state.submits += 1
            step = self._state.submit_steps.popleft() if self._state.submit_steps else None
            outcome = self._state.outcomes.popleft() if self._state.outcomes else ("video", 0)
        if step is not None and step[0] == "hang":
            assert self._released is not None
            self.hung.set()
            await self._released.wait()
        elif step is not None:
            return _error(step[1], f"Scripted failure {step[1]}.")
        instances = body.get("instances") or [{}]
        prompt = str(instances[0].get("prompt", ""))
        name = (
            f"projects/{PROJECT}/locations/{LOCATION}/publishers/google/models/{model}"
            f"/operations/{uuid.uuid4()}"
        )
        with self._state.lock:
            self._state.operations[name] = _Operation(name, prompt, outcome[0], outcome[1])
        return JSONResponse({"name": name})

    def _poll(self, body: dict[str, Any]) -> Response:
        name = str(body.get("operationName", ""))
        with self._state.lock:
            self._state.polls += 1
            if self._state.poll_failures:
                status = self._state.poll_failures.popleft()
                return _error(status, f"Scripted failure {status}.")
            operation = self._state.operations.get(name)
            if operation is None:
                return _error(404, f"Operation {name!r} not found.")
            operation.polls += 1
            running = operation.outcome == "never" or operation.polls <= self.polls_before_done
        if running:
            return JSONResponse({"name": name, "done": False})
        return JSONResponse({"name": name, "done": True, **_result(operation)})


def _result(operation: _Operation) -> dict[str, Any]:
    if operation.outcome == "error":
        return {"error": {"code": operation.code, "message": "Scripted operation error."}}
    response: dict[str, Any] = {"@type": RESPONSE_TYPE, "raiMediaFilteredCount": 0}
    if operation.outcome == "filter":
        response["raiMediaFilteredCount"] = 1
        response["raiMediaFilteredReasons"] = ["The prompt could not be submitted (fake)."]
    elif operation.outcome == "gcs":
        response["videos"] = [{"gcsUri": "gs://fake-bucket/clip.mp4", "mimeType": "video/mp4"}]
    else:
        data = base64.b64encode(sample_mp4(operation.prompt)).decode("ascii")
        response["videos"] = [{"bytesBase64Encoded": data, "mimeType": "video/mp4"}]
    return {"response": response}


def _error(status: int, message: str) -> JSONResponse:
    name = STATUS_NAMES.get(status, "UNAUTHENTICATED" if status == 401 else "UNKNOWN")
    return JSONResponse(
        {"error": {"code": status, "message": message, "status": name}}, status_code=status
    )
