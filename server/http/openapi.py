"""The OpenAPI 3.1 document of the REST API (``/openapi.json``), written out by hand.

The WebSocket protocol is not expressible in OpenAPI; ``docs/protocol.md`` describes it.
"""

from __future__ import annotations

from functools import cache
from typing import Any

_PROBLEM = {"$ref": "#/components/schemas/Problem"}


def _op(
    summary: str, *, body: bool = False, ok: str = "OK", extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {"description": ok},
        "401": {
            "description": "Missing, malformed or expired token",
            "content": {"application/problem+json": {"schema": _PROBLEM}},
        },
        "403": {
            "description": "Token of another user",
            "content": {"application/problem+json": {"schema": _PROBLEM}},
        },
    }
    operation: dict[str, Any] = {
        "summary": summary,
        "responses": responses,
        "security": [{"bearer": []}],
    }
    if body:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
        responses["400"] = {"description": "Body is not JSON"}
        responses["413"] = {"description": "Body over 1 MiB"}
        responses["422"] = {"description": "No valid frame / invalid field"}
    if extra:
        responses.update(extra)
    return operation


_USER = {"name": "user_id", "in": "path", "required": True, "schema": {"type": "string"}}


@cache
def openapi_document() -> dict[str, Any]:
    """The document, built once."""
    frame = {
        "type": "object",
        "required": ["ts"],
        "properties": {
            "ts": {"type": "integer", "description": "epoch milliseconds"},
            "hr": {"type": "number", "minimum": 20, "maximum": 250},
            "hrv": {"type": "number", "minimum": 1, "maximum": 300},
            "steps": {"type": "integer", "minimum": 0},
            "spo2": {"type": "number", "minimum": 50, "maximum": 100},
            "skin_temp": {"type": "number", "minimum": 20, "maximum": 45},
            "resp_rate": {"type": "number"},
            "device": {"type": "string"},
            "seq": {"type": "integer"},
            "env": {"type": "object"},
        },
        "additionalProperties": False,
    }
    state_params = [
        _USER,
        {"name": "wait", "in": "query", "schema": {"type": "number", "maximum": 60}},
        {"name": "since", "in": "query", "schema": {"type": "integer"}},
        {"name": "If-None-Match", "in": "header", "schema": {"type": "string"}},
    ]
    return {
        "openapi": "3.1.0",
        "info": {"title": "Companion push server", "version": "1"},
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
            "schemas": {
                "Frame": frame,
                "Problem": {
                    "type": "object",
                    "properties": {k: {"type": "string"} for k in ("type", "title", "detail")}
                    | {"status": {"type": "integer"}},
                },
            },
        },
        "paths": {
            "/openapi.json": {
                "get": {"summary": "This document", "responses": {"200": {"description": "OK"}}}
            },
            "/v1/users/{user_id}/frames": {
                "parameters": [_USER],
                "post": _op(
                    "Upload frames; the answer carries version and state_hash",
                    body=True,
                    extra={"503": {"description": "Not durable; send again"}},
                ),
            },
            "/v1/users/{user_id}/state": {
                "parameters": state_params,
                "get": _op(
                    "Current state; ETag = state hash; long-poll with wait",
                    extra={"304": {"description": "Not modified"}},
                ),
            },
            "/v1/users/{user_id}/export": {
                "parameters": [_USER],
                "get": _op("Everything stored about a user"),
            },
            "/v1/users/{user_id}": {"parameters": [_USER], "delete": _op("Erase a user's data")},
            "/v1/demo/users/{user_id}/state": {
                "parameters": [_USER],
                "post": _op("Commit state (service token)", body=True),
            },
            "/v1/demo/users/{user_id}/profile": {
                "parameters": [_USER],
                "put": _op("Set coach persona (service token)", body=True),
            },
            "/v1/demo/users/{user_id}/scenario": {
                "parameters": [_USER],
                "post": _op(
                    "Ingest a synthetic scenario (service, or the user's debug token)", body=True
                ),
            },
            "/v1/demo/users/{user_id}/analyse": {
                "parameters": [_USER],
                "post": _op("Schedule an analysis, optionally forced (service token)", body=True),
            },
            "/debug": {
                "get": {
                    "summary": "Browser debug page",
                    "responses": {"200": {"description": "HTML"}},
                }
            },
            "/debug/static/{name}": {
                "get": {
                    "summary": "Debug page assets",
                    "responses": {
                        "200": {"description": "OK"},
                        "404": {"description": "No such asset"},
                    },
                }
            },
            "/sensor-data": {"post": _op("Legacy upload", body=True)},
            "/api/v1/user/{user_id}/data": {
                "parameters": [_USER],
                "post": _op("Legacy upload", body=True),
            },
            "/avatar/current-state/{user_id}": {
                "parameters": [_USER],
                "get": _op("Legacy state poll"),
            },
            "/api/v1/user/{user_id}/state": {"parameters": [_USER], "get": _op("Legacy state")},
            "/healthz": {
                "get": {"summary": "Liveness", "responses": {"200": {"description": "OK"}}}
            },
            "/readyz": {
                "get": {
                    "summary": "Readiness",
                    "responses": {
                        "200": {"description": "OK"},
                        "503": {"description": "Not ready"},
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {"200": {"description": "OK"}},
                }
            },
            "/media/{key:path}": {
                "get": {
                    "summary": "Avatar media",
                    "responses": {
                        "200": {"description": "OK"},
                        "304": {"description": "Not modified"},
                        "404": {"description": "No such media"},
                    },
                }
            },
        },
    }
