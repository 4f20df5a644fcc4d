"""Claude as an analyst, through the official ``anthropic`` SDK, direct or via Bedrock.

:class:`ClaudeAnalyst` sends one Messages API call per request: the system prompt carries
the coach persona and the environment (:mod:`brain.analyst.persona`), the user message the
features, trend and baseline as compact JSON, and ``tool_choice`` forces the
``record_assessment`` tool, whose JSON schema takes its enums from :mod:`brain.model`. The
tool input is validated again here (:func:`parse_assessment`): a model may still answer
outside the schema, and nothing outside the enums may reach a device.

The tool schema, the instructions and the persona end Anthropic's prompt-cache breakpoints
(``cache_control``), each kept only when the prefix it ends reaches the model's minimum
(:func:`~brain.analyst.pricing.cache_minimum_of`: 4,096 tokens for Haiku 4.5, 1,024 to 4,096
for others; :func:`cache_marks`): a shorter prefix is never cached, so its mark would be
noise. Today's static prefix (~500 tokens) reaches no model's minimum, so no mark is sent
(see ``docs/cost.md``). The answer's cache writes and reads are reported apart.

The SDK's own retries are off (``max_retries=0``): :class:`~brain.analyst.guard.GuardedAnalyst`
owns retries, timeouts and the circuit, so one policy decides how hard to try.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any, TypeVar, cast

import anthropic
import orjson
from anthropic import AsyncAnthropic, AsyncAnthropicBedrock
from anthropic.types import Message, TextBlockParam, ToolParam

from brain.analyst.base import AnalysisRequest, Answer
from brain.analyst.errors import AnalystTimeout, AnalystUnavailable, AnswerInvalid
from brain.analyst.persona import SystemBlock, system_blocks
from brain.analyst.pricing import cache_minimum_of
from brain.coaching import MAX_REASONING
from brain.model import Action, Assessment, Mood, Source, State

DEFAULT_MODEL = "claude-haiku-4-5"
"""Fast and cheap enough to run on every change of a user's window."""

DEFAULT_BEDROCK_MODEL = "eu.anthropic.claude-haiku-4-5-20251001-v1:0"
"""The same model through Bedrock's EU cross-region inference profile."""

BEDROCK_REGION = "eu-central-1"

TOOL_NAME = "record_assessment"
MAX_ACTIONS = 3

TOOL: ToolParam = {
    "name": TOOL_NAME,
    "description": "Record your assessment of the user's last 15 minutes.",
    "input_schema": {
        "type": "object",
        "properties": {
            "state": {"type": "string", "enum": [s.value for s in State]},
            "mood": {"type": "string", "enum": [m.value for m in Mood]},
            "energy": {"type": "integer", "minimum": 0, "maximum": 100},
            "actions": {
                "type": "array",
                "items": {"type": "string", "enum": [a.value for a in Action]},
                "maxItems": MAX_ACTIONS,
                "uniqueItems": True,
            },
            "reasoning": {"type": "string", "minLength": 1, "maxLength": MAX_REASONING},
        },
        "required": ["state", "mood", "energy", "actions", "reasoning"],
        "additionalProperties": False,
    },
    # The first cache breakpoint: the tool schema is the start of every request's prompt.
    "cache_control": {"type": "ephemeral"},
}
"""The tool the model must call; its enums are the values of the :mod:`brain.model` enums."""

CHARS_PER_TOKEN = 3.0
"""A generous estimate (English and JSON run 3.5 to 4 characters a token): a prefix near a
model's minimum is marked rather than missed (a useless mark costs nothing)."""

_RETRYABLE_STATUS = frozenset({408, 409, 429})
_E = TypeVar("_E", bound=StrEnum)


class ClaudeAnalyst:
    """A :class:`~brain.analyst.base.MeteredAnalyst` backed by a Claude model.

    Build it with :meth:`direct` or :meth:`bedrock`, or pass a configured SDK client; call
    :meth:`aclose` when done (the client holds a connection pool).
    """

    def __init__(
        self,
        client: AsyncAnthropic | AsyncAnthropicBedrock,
        *,
        model: str = DEFAULT_MODEL,
        max_tokens: int = 512,
        cache_minimum_tokens: int | None = None,
    ) -> None:
        self._client = client
        self._model = model
        self.max_tokens = max_tokens
        self.cache_minimum_tokens = (
            cache_minimum_of(model) if cache_minimum_tokens is None else cache_minimum_tokens
        )
        """The shortest prefix the model caches (``None``: the model's, from the docs)."""

    @classmethod
    def direct(
        cls,
        *,
        model: str = DEFAULT_MODEL,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout_s: float = 30.0,
        max_tokens: int = 512,
        cache_minimum_tokens: int | None = None,
    ) -> ClaudeAnalyst:
        """Claude through the Anthropic API; ``None`` arguments fall back to the SDK's
        ``ANTHROPIC_API_KEY`` and ``ANTHROPIC_BASE_URL`` (and the model's cache minimum)."""
        client = AsyncAnthropic(
            api_key=api_key, base_url=base_url, timeout=timeout_s, max_retries=0
        )
        return cls(
            client, model=model, max_tokens=max_tokens, cache_minimum_tokens=cache_minimum_tokens
        )

    @classmethod
    def bedrock(
        cls,
        *,
        model: str = DEFAULT_BEDROCK_MODEL,
        aws_region: str = BEDROCK_REGION,
        base_url: str | None = None,
        timeout_s: float = 30.0,
        max_tokens: int = 512,
    ) -> ClaudeAnalyst:
        """Claude through Amazon Bedrock, with the usual AWS credentials chain."""
        client = AsyncAnthropicBedrock(
            aws_region=aws_region, base_url=base_url, timeout=timeout_s, max_retries=0
        )
        return cls(client, model=model, max_tokens=max_tokens)

    @property
    def model(self) -> str:
        return self._model

    @property
    def client(self) -> AsyncAnthropic | AsyncAnthropicBedrock:
        return self._client

    async def aclose(self) -> None:
        """Close the SDK client's connections."""
        await self._client.close()

    async def assess(self, request: AnalysisRequest) -> Assessment:
        """The model's assessment; raises what :meth:`answer` raises."""
        return (await self.answer(request)).assessment

    async def answer(self, request: AnalysisRequest) -> Answer:
        """Ask the model about ``request``.

        Raises :class:`~brain.analyst.errors.AnalystUnavailable` (or its
        :class:`~brain.analyst.errors.AnalystTimeout`) when the call fails, and
        :class:`~brain.analyst.errors.AnswerInvalid` when the answer is not a valid assessment.
        """
        tools, system = cache_marks([TOOL], system_blocks(request), self.cache_minimum_tokens)
        try:
            message = await self._client.messages.create(
                model=self._model,
                max_tokens=self.max_tokens,
                system=cast(list[TextBlockParam], system),
                messages=[{"role": "user", "content": user_message(request)}],
                tools=tools,
                tool_choice={"type": "tool", "name": TOOL_NAME},
            )
        except anthropic.APITimeoutError as exc:
            raise AnalystTimeout(f"{self._model} did not answer in time") from exc
        except anthropic.APIConnectionError as exc:
            raise AnalystUnavailable(f"cannot reach {self._model}: {exc}", retryable=True) from exc
        except anthropic.APIStatusError as exc:
            status = exc.status_code
            retryable = status >= 500 or status in _RETRYABLE_STATUS
            raise AnalystUnavailable(
                f"{self._model} answered HTTP {status}", retryable=retryable, status=status
            ) from exc
        except anthropic.APIResponseValidationError as exc:
            raise AnswerInvalid(f"{self._model} sent a malformed response: {exc}") from exc
        return _answer(message)


def cache_marks(
    tools: Sequence[ToolParam], system: Sequence[SystemBlock], minimum_tokens: int
) -> tuple[list[ToolParam], list[SystemBlock]]:
    """``tools`` and ``system`` with a ``cache_control`` mark kept only where the prefix it
    ends (tools, then system blocks, in the API's order) reaches ``minimum_tokens``, by the
    estimate of :data:`CHARS_PER_TOKEN`."""
    chars = 0

    def keep(block: Mapping[str, Any], text: str) -> bool:
        nonlocal chars
        chars += len(text)
        return "cache_control" in block and math.ceil(chars / CHARS_PER_TOKEN) >= minimum_tokens

    out_tools: list[ToolParam] = []
    for tool in tools:
        bare = cast(ToolParam, {k: v for k, v in tool.items() if k != "cache_control"})
        marked = keep(tool, orjson.dumps(bare).decode())
        out_tools.append(tool if marked else bare)
    out_system: list[SystemBlock] = []
    for block in system:
        if keep(block, block["text"]):
            out_system.append(block)
        else:
            out_system.append({"type": "text", "text": block["text"]})
    return out_tools, out_system


def user_message(request: AnalysisRequest) -> str:
    """The user turn: the window's numbers as compact JSON, with one line of instruction."""
    data: dict[str, Any] = {"features": _compact(dataclasses.asdict(request.features))}
    if request.baseline is not None:
        data["baseline"] = _compact(dataclasses.asdict(request.baseline))
    data["trend_per_minute"] = [_compact(dataclasses.asdict(p)) for p in request.trend]
    body = orjson.dumps(data).decode()
    return f"Assess this window and call {TOOL_NAME}.\n{body}"


def parse_assessment(data: object) -> Assessment:
    """Validate a ``record_assessment`` tool input; raise :class:`AnswerInvalid` if it is not.

    ``state``, ``mood`` and every action must be values of the model enums (duplicate
    actions are dropped), ``energy`` an integer 0-100, ``reasoning`` a non-empty string of
    at most :data:`~brain.coaching.MAX_REASONING` characters.
    """
    if not isinstance(data, Mapping):
        raise AnswerInvalid(f"tool input must be an object, got {type(data).__name__}")
    state = _member(State, data.get("state"), "state")
    mood = _member(Mood, data.get("mood"), "mood")
    energy = data.get("energy")
    if isinstance(energy, bool) or not isinstance(energy, int) or not 0 <= energy <= 100:
        raise AnswerInvalid(f"energy must be an integer 0-100, got {energy!r}")
    raw_actions = data.get("actions", [])
    if not isinstance(raw_actions, list) or len(raw_actions) > MAX_ACTIONS:
        raise AnswerInvalid(f"actions must be a list of at most {MAX_ACTIONS}, got {raw_actions!r}")
    actions = tuple(dict.fromkeys(_member(Action, a, "action") for a in raw_actions))
    reasoning = data.get("reasoning")
    if not isinstance(reasoning, str) or not reasoning.strip():
        raise AnswerInvalid(f"reasoning must be a non-empty string, got {reasoning!r}")
    if len(reasoning.strip()) > MAX_REASONING:
        raise AnswerInvalid(f"reasoning has {len(reasoning)} characters, over {MAX_REASONING}")
    return Assessment(
        state=state,
        mood=mood,
        energy=energy,
        reasoning=reasoning.strip(),
        actions=actions,
        source=Source.LLM,
    )


def _member(enum: type[_E], value: object, name: str) -> _E:
    """``value`` as a member of ``enum``; raise :class:`AnswerInvalid` naming ``name``."""
    if isinstance(value, str):
        try:
            return enum(value)
        except ValueError:
            pass
    allowed = ", ".join(member.value for member in enum)
    raise AnswerInvalid(f"{name} must be one of {allowed}, got {value!r}")


def _answer(message: Message) -> Answer:
    usage = message.usage
    tokens = {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_write_tokens": usage.cache_creation_input_tokens or 0,
        "cache_read_tokens": usage.cache_read_input_tokens or 0,
    }
    for block in message.content:
        if block.type == "tool_use" and block.name == TOOL_NAME:
            try:
                assessment = parse_assessment(block.input)
            except AnswerInvalid as exc:
                raise AnswerInvalid(str(exc), model=message.model, **tokens) from exc
            return Answer(assessment=assessment, model=message.model, **tokens)
    kinds = ", ".join(block.type for block in message.content) or "nothing"
    raise AnswerInvalid(
        f"expected a {TOOL_NAME} tool call, got {kinds} (stop_reason {message.stop_reason})",
        model=message.model,
        **tokens,
    )


def _compact(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` without ``None``s, floats to two decimals: fewer tokens, same meaning."""
    return {
        key: round(value, 2) if isinstance(value, float) else value
        for key, value in values.items()
        if value is not None
    }
