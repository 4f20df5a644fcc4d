"""The OpenAPI entries of the decision history: ``GET /v1/users/{id}/history`` and the
``HistoryEvent`` / ``HistoryPage`` schemas.

The event's properties follow :data:`server.store.history_codec.EVENT_FIELDS` (the one
shape of an event on the wire, in the export and in the store); a test checks the two
stay equal.
"""

from __future__ import annotations

from typing import Any

from server.history import MAX_PAGE
from server.http.history import DEFAULT_LIMIT
from server.http.openapi_blocks import (
    USER_PARAM,
    json_response,
    object_schema,
    operation,
    problem_response,
    ref,
)

_OPTIONAL_TEXT = {"type": ["string", "null"]}
_BOUND = {
    "anyOf": [
        {"type": "integer", "minimum": 0, "description": "a version"},
        {"type": "string", "format": "date-time", "description": "an RFC 3339 time"},
    ]
}


def history_schemas() -> dict[str, Any]:
    """The component schemas ``HistoryEvent`` and ``HistoryPage``."""
    event = object_schema(
        {
            "version": {"type": "integer", "minimum": 1},
            "at": {"type": "integer", "description": "commit time, epoch ms"},
            "cause": {
                "type": "string",
                "description": "what made the commit: analysis, avatar, demo…",
            },
            "source": {
                "type": "string",
                "description": "who decided: rules, llm, manual, avatar…",
            },
            "state": {"type": "string"},
            "mood": {"type": "string"},
            "energy": {"type": "integer", "minimum": 0, "maximum": 100},
            "reasoning": {"type": "string"},
            "actions": {"type": "array", "items": {"type": "string"}},
            "image_url": _OPTIONAL_TEXT,
            "video_url": _OPTIONAL_TEXT,
            "changed": {
                "type": "array",
                "items": {"type": "string"},
                "description": "the visible fields this version changed",
            },
            "model": {**_OPTIONAL_TEXT, "description": "the model that decided, when known"},
            "cost_usd": {"type": ["number", "null"], "minimum": 0},
            "features": {
                "type": ["object", "null"],
                "additionalProperties": {"type": ["number", "string", "boolean", "null"]},
                "description": "a summary of the features the decision saw, when known",
            },
            "fallback": {
                **_OPTIONAL_TEXT,
                "description": "why the rules answered instead of the model, when they did",
            },
        },
        required=["version", "at", "cause", "source", "state", "mood", "energy"],
    )
    page = object_schema(
        {
            "user_id": {"type": "string"},
            "events": {"type": "array", "items": ref("HistoryEvent"), "maxItems": MAX_PAGE},
            "next_before": {
                "type": ["integer", "null"],
                "description": "pass as `before` for the next, older page; null at the end",
            },
        },
        required=["user_id", "events", "next_before"],
    )
    return {"HistoryEvent": event, "HistoryPage": page}


def history_paths() -> dict[str, Any]:
    """The path of ``GET /v1/users/{id}/history``."""
    parameters = [
        {
            "name": "limit",
            "in": "query",
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
            "description": f"events per page (default {DEFAULT_LIMIT})",
        },
        {
            "name": "before",
            "in": "query",
            "schema": _BOUND,
            "description": "only events older than this version, or committed before this time",
        },
        {
            "name": "since",
            "in": "query",
            "schema": _BOUND,
            "description": "only events newer than this version, or committed from this time on",
        },
    ]
    return {
        "/v1/users/{user_id}/history": {
            "parameters": [USER_PARAM],
            "get": {
                **operation(
                    "Decision history, newest first, in pages (the user's phone, watch or "
                    "debug token, or a service token)",
                    {"200": json_response("A page of events", ref("HistoryPage"))},
                    extra={"400": problem_response("Bad limit, before or since")},
                ),
                "parameters": parameters,
            },
        }
    }
