"""A local fake of the Anthropic Messages API, for running the real ``anthropic`` SDK against.

:class:`FakeAnthropicApi` is a real HTTP server (Starlette under uvicorn, on 127.0.0.1, in a
background thread) that answers ``POST /v1/messages`` in the shapes the real API uses:

- a tool-use answer: ``{id, type: "message", role: "assistant", model, content: [{type:
  "tool_use", id, name, input}], stop_reason: "tool_use", stop_sequence: null, usage:
  {input_tokens, output_tokens, cache_creation_input_tokens, cache_read_input_tokens}}``,
  with a ``request-id`` header;
- an error: ``{type: "error", error: {type, message}, request_id}`` with the matching status
  (500 ``api_error``, 529 ``overloaded_error``, 429 ``rate_limit_error``…).

Prompt caching is modelled as the API documents it: blocks marked with ``cache_control``
(tools, then system blocks, then message blocks, in that order) end cacheable prefixes; a
prefix of at least the model's minimum length (:data:`CACHE_MINIMUM_TOKENS`, or
:attr:`FakeAnthropicApi.cache_minimum_tokens` when set) is written to the cache on first use
(``cache_creation_input_tokens``) and read from it afterwards (``cache_read_input_tokens``);
``input_tokens`` counts only the rest. Shorter prefixes are not cached, silently, as on the
real API. Entries do not expire (the real cache keeps them 5 minutes after last use);
:meth:`~FakeAnthropicApi.reset` empties it.

A request without the expected key (in ``x-api-key``, or as ``Authorization: Bearer``, which
is how SDK 2.x sends it) gets the API's 401 ``authentication_error``.
Unscripted calls answer with :attr:`FakeAnthropicApi.default_input` as the tool input.
Tests script the next answers with :meth:`~FakeAnthropicApi.answer` (any tool input, valid
or not), :meth:`~FakeAnthropicApi.answer_text` (text instead of the tool call),
:meth:`~FakeAnthropicApi.fail` and :meth:`~FakeAnthropicApi.hang` (held until
:meth:`~FakeAnthropicApi.release`, which teardown also calls: nothing here sleeps). Every
request body is recorded, and :attr:`~FakeAnthropicApi.calls` counts the messages calls.

Use it as a context manager (``with FakeAnthropicApi() as api:``); ``api.base_url`` goes into
``AsyncAnthropic(base_url=...)`` or ``ANTHROPIC_BASE_URL``. Tests that share one server call
:meth:`~FakeAnthropicApi.reset` between them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.server import FakeServer

API_KEY = "test"
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
ERROR_MESSAGES = {429: "Number of requests has exceeded your rate limit", 529: "Overloaded"}

CACHE_MINIMUM_TOKENS = {
    "claude-haiku-4-5": 4096,
    "claude-opus-4-5": 4096,
    "claude-opus-4-6": 4096,
    "claude-3-5-haiku": 2048,
    "claude-3-haiku": 2048,
}
"""The shortest prefix the API caches, by model family; other models: 1,024 tokens."""

DEFAULT_INPUT: dict[str, Any] = {
    "state": "calm",
    "mood": "happy",
    "energy": 72,
    "actions": ["hydrate"],
    "reasoning": "Heart steady at 68 bpm with HRV at your baseline. Keep sipping water.",
}


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake received."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def api_key(self) -> str | None:
        """The key the request carried, from ``x-api-key`` or a bearer ``authorization``."""
        if "x-api-key" in self.headers:
            return self.headers["x-api-key"]
        scheme, _, token = self.headers.get("authorization", "").partition(" ")
        return token if scheme.lower() == "bearer" and token else None

    @property
    def system(self) -> str:
        """The system prompt, whether sent as a string or as text blocks."""
        system = self.body.get("system", "")
        if isinstance(system, str):
            return system
        return "\n".join(block.get("text", "") for block in system)

    @property
    def user_text(self) -> str:
        """The text of the last user message."""
        content = self.body["messages"][-1]["content"]
        if isinstance(content, str):
            return content
        return "\n".join(block.get("text", "") for block in content)


@dataclass
class _Step:
    kind: str  # "answer", "text", "fail", "hang"
    status: int = 500
    payload: Any = None


@dataclass
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    steps: deque[_Step] = field(default_factory=deque)
    requests: list[RecordedRequest] = field(default_factory=list)
    usages: list[dict[str, int]] = field(default_factory=list)
    cached_prefixes: set[str] = field(default_factory=set)
    calls: int = 0


class FakeAnthropicApi(FakeServer):
    """The fake server; see the module docstring. Not started until :meth:`start`."""

    name = "fake Anthropic API"

    def __init__(self, *, api_key: str = API_KEY) -> None:
        super().__init__()
        self.api_key = api_key
        self.default_input: dict[str, Any] = dict(DEFAULT_INPUT)
        self.cache_minimum_tokens: int | None = None
        """The shortest cacheable prefix for every model (``None``: the model's own)."""
        self.hung = threading.Event()
        """Set when a request starts hanging (so a test can see it arrived)."""
        self._state = _State()

    # -- scripting -------------------------------------------------------------------

    def answer(self, tool_input: Any, times: int = 1) -> None:
        """Answer the next ``times`` calls with a tool call whose input is ``tool_input``."""
        self._script(_Step("answer", payload=tool_input), times)

    def answer_text(self, text: str = "I think the user is calm.", times: int = 1) -> None:
        """Answer the next calls with a text block and no tool call (``end_turn``)."""
        self._script(_Step("text", payload=text), times)

    def fail(self, status: int, times: int = 1) -> None:
        """Answer the next ``times`` calls with the API's error for HTTP ``status``."""
        self._script(_Step("fail", status=status), times)

    def hang(self, times: int = 1) -> None:
        """Hold the next ``times`` calls until :meth:`release` (then answer normally)."""
        self._script(_Step("hang"), times)

    def reset(self) -> None:
        """Forget the script, the records and the default answer (to share one server)."""
        self.release()
        with self._state.lock:
            self._state.steps.clear()
            self._state.requests.clear()
            self._state.usages.clear()
            self._state.cached_prefixes.clear()
            self._state.calls = 0
        self.default_input = dict(DEFAULT_INPUT)
        self.cache_minimum_tokens = None
        self.hung.clear()
        # A hung request still waits on the old event, which release() has just set.
        self._released = asyncio.Event()

    def _script(self, step: _Step, times: int) -> None:
        with self._state.lock:
            self._state.steps.extend([step] * times)

    # -- what happened ---------------------------------------------------------------

    @property
    def calls(self) -> int:
        """How many ``POST /v1/messages`` requests arrived."""
        with self._state.lock:
            return self._state.calls

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request so far, oldest first."""
        with self._state.lock:
            return list(self._state.requests)

    @property
    def usages(self) -> list[dict[str, int]]:
        """The ``usage`` of every answer sent (errors have none), oldest first."""
        with self._state.lock:
            return list(self._state.usages)

    # -- lifecycle -------------------------------------------------------------------

    # -- the API ---------------------------------------------------------------------

    def _app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/messages", self._messages, methods=["POST"])])

    async def _messages(self, request: Request) -> Response:
        raw = await request.body()
        body = json.loads(raw) if raw else {}
        recorded = RecordedRequest(request.method, request.url.path, dict(request.headers), body)
        with self._state.lock:
            self._state.requests.append(recorded)
            self._state.calls += 1
            number = self._state.calls
            step = self._state.steps.popleft() if self._state.steps else None
        if recorded.api_key != self.api_key:
            return _error(401, "invalid x-api-key", number)
        if step is not None and step.kind == "hang":
            assert self._released is not None
            self.hung.set()
            await self._released.wait()
        elif step is not None and step.kind == "fail":
            return _error(step.status, f"Scripted failure {step.status}.", number)
        if step is not None and step.kind == "text":
            content: list[dict[str, Any]] = [{"type": "text", "text": step.payload}]
            stop_reason = "end_turn"
        else:
            tool_input = step.payload if step is not None and step.kind == "answer" else None
            content = [
                {
                    "type": "tool_use",
                    "id": f"toolu_fake{number:06d}",
                    "name": _tool_name(body),
                    "input": self.default_input if tool_input is None else tool_input,
                }
            ]
            stop_reason = "tool_use"
        # Rough but deterministic token counts: about four bytes of JSON per token.
        total = max(len(raw) // 4, 1)
        with self._state.lock:
            written, read = self._cache(body)
            usage = {
                "input_tokens": max(total - written - read, 1),
                "output_tokens": max(len(json.dumps(content)) // 4, 1),
                "cache_creation_input_tokens": written,
                "cache_read_input_tokens": read,
            }
            self._state.usages.append(usage)
        return JSONResponse(
            {
                "id": f"msg_fake{number:06d}",
                "type": "message",
                "role": "assistant",
                "model": body.get("model", "claude-unknown"),
                "content": content,
                "stop_reason": stop_reason,
                "stop_sequence": None,
                "usage": usage,
            },
            headers={"request-id": f"req_fake{number:06d}"},
        )

    def _cache(self, body: dict[str, Any]) -> tuple[int, int]:
        """Tokens written to and read from the prompt cache by ``body`` (lock held)."""
        minimum = self.cache_minimum_tokens
        if minimum is None:
            model = str(body.get("model", ""))
            families = [f for f in CACHE_MINIMUM_TOKENS if f in model]
            minimum = CACHE_MINIMUM_TOKENS[max(families, key=len)] if families else 1024
        breakpoints = [(key, tokens) for key, tokens in _breakpoints(body) if tokens >= minimum]
        if not breakpoints:
            return 0, 0
        cached = self._state.cached_prefixes
        read = max((tokens for key, tokens in breakpoints if key in cached), default=0)
        last_key, last_tokens = breakpoints[-1]
        written = 0 if last_key in cached else last_tokens - read
        cached.update(key for key, _ in breakpoints)
        return written, read


def _breakpoints(body: dict[str, Any]) -> list[tuple[str, int]]:
    """The cacheable prefixes of a request: (hash of the prefix, its tokens), in order.

    The prefix runs through tools, system blocks and message blocks, in that order, up to
    and including each block marked with ``cache_control``.
    """
    blocks: list[Any] = list(body.get("tools") or [])
    system = body.get("system")
    if isinstance(system, list):
        blocks.extend(system)
    elif system:
        blocks.append(system)
    for message in body.get("messages") or []:
        content = message.get("content")
        blocks.extend(content if isinstance(content, list) else [content])
    prefix = hashlib.sha256()
    size = 0
    found = []
    for block in blocks:
        text = json.dumps(block, sort_keys=True)
        prefix.update(text.encode())
        size += len(text)
        if isinstance(block, dict) and block.get("cache_control"):
            found.append((prefix.hexdigest(), size // 4))
    return found


def _tool_name(body: dict[str, Any]) -> str:
    """The tool the request forces, else its first tool (what the model would call)."""
    choice = body.get("tool_choice") or {}
    if choice.get("type") == "tool":
        return str(choice["name"])
    tools = body.get("tools") or [{"name": "unknown_tool"}]
    return str(tools[0]["name"])


def _error(status: int, message: str, number: int) -> JSONResponse:
    kind = ERROR_TYPES.get(status, "api_error")
    request_id = f"req_fake{number:06d}"
    return JSONResponse(
        {
            "type": "error",
            "error": {"type": kind, "message": ERROR_MESSAGES.get(status, message)},
            "request_id": request_id,
        },
        status_code=status,
        headers={"request-id": request_id},
    )
