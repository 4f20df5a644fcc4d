"""The OpenAPI 3.1 document of the HTTP API (``/openapi.json``): the contract of the server.

Nothing in it is written twice: frames come from :func:`server.protocol.frame_json_schema`
(the ranges the server checks), user ids from its pattern, state fields from
:data:`brain.model.USER_STATE_FIELDS`, enums from :mod:`brain.model`, limits from the
routes' own constants. Every status a route can answer is listed with its media type, and
a property-based fuzz (``tests/server/test_openapi_fuzz.py``) holds the server to it.

The WebSocket protocol is not expressible in OpenAPI; ``docs/protocol.md`` describes it.
"""

from __future__ import annotations

from functools import cache
from typing import Any, Final

from brain.avatar.prompt import Species
from brain.model import USER_STATE_FIELDS, Action, CoachStyle, CoachTone, StateField
from brain.scenarios import KINDS
from server.http.access import MAX_BODY_BYTES
from server.http.legacy import STRESS_LEVELS
from server.http.rest import MAX_WAIT_S
from server.http.scenario_routes import MAX_MINUTES
from server.protocol import MAX_FRAMES_PER_MESSAGE, USER_ID_PATTERN, frame_json_schema

_REF = "#/components/schemas/"
_PROBLEM_TYPE: Final = "application/problem+json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _problem(description: str, *, retry_after: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {_PROBLEM_TYPE: {"schema": _ref("Problem")}},
    }
    if retry_after:
        response["headers"] = {"Retry-After": {"schema": {"type": "string"}, "required": True}}
    return response


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_AUTH: Final = {
    "401": _problem("Missing, malformed or expired token"),
    "403": _problem("Token of another user, or of a device kind this route does not serve"),
    "429": _problem("Too many requests for this token", retry_after=True),
    "503": _problem("The store is unavailable", retry_after=True),
}
_USER_ERRORS: Final = {"404": _problem("No such user: the id has a shape no user id has")}
_BODY_ERRORS: Final = {
    "400": _problem("Body is not JSON, or not of the expected shape"),
    "413": _problem(f"Body over {MAX_BODY_BYTES} bytes, or over {MAX_FRAMES_PER_MESSAGE} frames"),
    "415": _problem("Body is not application/json"),
}
_SECURITY: Final[list[dict[str, list[str]]]] = [{"bearer": []}, {"token": []}]


def _op(
    summary: str,
    ok: dict[str, dict[str, Any]],
    *,
    body: dict[str, Any] | None = None,
    body_required: bool = True,
    user: bool = True,
    extra: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    responses: dict[str, Any] = {**ok, **_AUTH}
    if user:
        responses.update(_USER_ERRORS)
    operation: dict[str, Any] = {"summary": summary, "security": _SECURITY}
    if body is not None:
        responses.update(_BODY_ERRORS)
        operation["requestBody"] = {
            "required": body_required,
            "content": {"application/json": {"schema": body}},
        }
    responses.update(extra or {})
    operation["responses"] = dict(sorted(responses.items()))
    return operation


def _public(summary: str, responses: dict[str, Any]) -> dict[str, Any]:
    return {"summary": summary, "security": [], "responses": responses}


def _object(properties: dict[str, Any], *, closed: bool = False, **more: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties, **more}
    if closed:
        schema["additionalProperties"] = False
    return schema


def _choice(values: Any) -> dict[str, Any]:
    return {"type": "string", "enum": [str(getattr(v, "value", v)) for v in values]}


def _state_schema(fields: tuple[StateField, ...]) -> dict[str, Any]:
    return _object({f.name: dict(f.schema) for f in fields}, required=[f.name for f in fields])


def _path_param(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema}


_USER: Final = _path_param("user_id", {"type": "string", "pattern": USER_ID_PATTERN})


def _components() -> dict[str, Any]:
    rejection = _object(
        {"index": {"type": "integer"}, "field": {"type": "string"}, "reason": {"type": "string"}},
        required=["index", "field", "reason"],
    )
    visible = tuple(f for f in USER_STATE_FIELDS if f.visible)
    demo_fields = {f.name: dict(f.schema) for f in visible}
    demo_fields["actions"] = {"type": "array", "items": _choice(Action)}
    demo_fields["reasoning"] = {"type": "string", "maxLength": 500}
    demo_fields["image_url"] = {
        "type": ["string", "null"],
        "maxLength": 2048,
        "pattern": "^(https?://|/media/)",
    }
    old_state = _object(
        {
            "state_hash": {"type": "string"},
            "timestamp": {
                "type": "integer",
                "description": "commit time of the current version, epoch milliseconds",
            },
            "image_url": {"type": ["string", "null"]},
            "mood": {"type": "string"},
        },
        required=["state_hash", "timestamp", "image_url", "mood"],
    )
    legacy_reading = _object(
        {
            "heart_rate": {"type": "number"},
            "hrv": {"type": "number"},
            "steps": {"type": "integer"},
            "spo2": {"type": "number"},
            "skin_temp": {"type": "number"},
            "skin_temperature": {"type": "number"},
            "timestamp": {"type": "number", "description": "epoch seconds or milliseconds"},
        },
    )
    return {
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            "token": {
                "type": "apiKey",
                "in": "query",
                "name": "token",
                "description": "the same token, for browsers and legacy firmware",
            },
        },
        "schemas": {
            "Frame": frame_json_schema(),
            "Rejection": rejection,
            "State": _state_schema(USER_STATE_FIELDS),
            "DemoChanges": _object({**demo_fields, "force": {"type": "boolean"}}, closed=True),
            "OldState": old_state,
            "LegacyReading": legacy_reading,
            "Problem": _object(
                {
                    "type": {"type": "string"},
                    "title": {"type": "string"},
                    "status": {"type": "integer"},
                    "detail": {"type": "string"},
                    "code": {"type": "string"},
                    "rejected": {"type": "array", "items": _ref("Rejection")},
                },
                required=["type", "title", "status", "detail"],
            ),
        },
    }


def _v1_paths() -> dict[str, Any]:
    frames = {"type": "array", "items": _ref("Frame"), "maxItems": MAX_FRAMES_PER_MESSAGE}
    upload = _object(
        {
            "accepted": {"type": "integer"},
            "rejected": {"type": "array", "items": _ref("Rejection")},
            "version": {"type": "integer"},
            "state_hash": {"type": "string"},
        },
        required=["accepted", "rejected", "version", "state_hash"],
    )
    state_params = [
        {
            "name": "wait",
            "in": "query",
            "schema": {"type": "number", "minimum": 0, "maximum": MAX_WAIT_S},
        },
        {"name": "since", "in": "query", "schema": {"type": "integer", "minimum": 0}},
        {"name": "If-None-Match", "in": "header", "schema": {"type": "string"}},
    ]
    profile = {
        "style": _choice(CoachStyle),
        "tone": _choice(CoachTone),
        "base_avatar": _choice(Species),
    }
    scenario = _object(
        {
            "kind": _choice(KINDS),
            "minutes": {"type": "number", "minimum": 0.5, "maximum": MAX_MINUTES},
        },
        closed=True,
        required=["kind"],
    )
    return {
        "/v1/users/{user_id}/frames": {
            "parameters": [_USER],
            "post": _op(
                "Upload frames; the answer carries version and state_hash (piggyback poll)",
                {"200": _json("Stored (some frames may be rejected)", upload)},
                body={"oneOf": [frames, _object({"frames": frames}, required=["frames"])]},
                extra={
                    "422": _problem("No valid frame; `rejected` says why"),
                    "503": _problem("Frames not durable; send them again", retry_after=True),
                },
            ),
        },
        "/v1/users/{user_id}/state": {
            "parameters": [_USER],
            "get": {
                **_op(
                    "Current state; ETag = state hash; long-poll with wait (and since)",
                    {
                        "200": _json("The state", _ref("State")),
                        "304": {"description": "Not modified (If-None-Match)"},
                    },
                    extra={"400": _problem("Bad wait or since")},
                ),
                "parameters": state_params,
            },
        },
        "/v1/users/{user_id}/export": {
            "parameters": [_USER],
            "get": _op(
                "Everything stored about a user (phone or service token)",
                {"200": _json("The export", {"type": "object"})},
            ),
        },
        "/v1/users/{user_id}": {
            "parameters": [_USER],
            "delete": _op(
                "Erase a user's data (phone or service token)",
                {
                    "200": _json(
                        "Erased",
                        _object(
                            {"user_id": {"type": "string"}, "deleted": {"type": "integer"}},
                            required=["user_id", "deleted"],
                        ),
                    )
                },
            ),
        },
        "/v1/demo/users/{user_id}/state": {
            "parameters": [_USER],
            "post": _op(
                "Commit state changes (service token)",
                {"200": _json("Committed, or unchanged", _ref("State"))},
                body=_ref("DemoChanges"),
                extra={
                    "409": _problem("The state changed meanwhile; send again"),
                    "422": _problem("A field is unknown or out of range (named in detail)"),
                },
            ),
        },
        "/v1/demo/users/{user_id}/profile": {
            "parameters": [_USER],
            "put": _op(
                "Set coach persona and base avatar (service token; any letter case)",
                {"200": _json("The profile", {"type": "object"})},
                body=_object(profile, closed=True),
            ),
        },
        "/v1/demo/users/{user_id}/scenario": {
            "parameters": [_USER],
            "post": _op(
                "Ingest a synthetic scenario (service, or the user's debug token)",
                {"200": _json("Ingested", {"type": "object"})},
                body=scenario,
                extra={
                    "422": _problem("Unknown kind or minutes out of range"),
                },
            ),
        },
        "/v1/demo/users/{user_id}/analyse": {
            "parameters": [_USER],
            "post": _op(
                "Schedule an analysis, optionally forced (service token)",
                {"202": _json("Scheduled", {"type": "object"})},
                body=_object({"force": {"type": "boolean"}}, closed=True),
                body_required=False,
                extra={
                    "422": _problem("force is not a boolean"),
                    "503": _problem("No pipeline here, or its queue is full", retry_after=False),
                },
            ),
        },
    }


def _legacy_paths() -> dict[str, Any]:
    ingest = _object(
        {
            "status": {"type": "string"},
            "accepted": {"type": "integer"},
            "rejected": {"type": "array", "items": _ref("Rejection")},
            **_ref_properties("OldState"),
        },
        required=["status", "accepted", "rejected"],
    )
    reading_body = {
        "allOf": [
            _ref("LegacyReading"),
            _object({"readings": {"type": "array", "items": _ref("LegacyReading")}}),
        ]
    }
    sensor_body = {
        "allOf": [reading_body, _object({"user_id": {"type": "string"}}, required=["user_id"])]
    }
    ingest_errors = {
        "422": _problem("No valid reading"),
        "503": _problem("Readings not durable; send them again", retry_after=True),
    }
    seed_state = {
        "allOf": [
            _ref("State"),
            _ref("OldState"),
            _object(
                {
                    "pet_state": _object(
                        {
                            "mood": {"type": "string"},
                            "energy_budget": {"type": "integer"},
                            "last_update": {"type": ["string", "null"], "format": "date-time"},
                        }
                    ),
                    "health_metrics": _object(
                        {
                            "hrv_trend": {"type": "null", "description": "not kept (see docs)"},
                            "sleep_hours": {"type": "null", "description": "not measured"},
                            "stress_level": _choice(sorted({*STRESS_LEVELS.values(), "low"})),
                        }
                    ),
                },
                required=["pet_state", "health_metrics"],
            ),
        ]
    }
    trigger = _object(
        {
            "user_id": {"type": "string"},
            "scenario": _choice(KINDS),
            "kind": _choice(KINDS),
            "minutes": {"type": "number", "minimum": 0.5, "maximum": MAX_MINUTES},
        },
        closed=True,
    )
    paths: dict[str, Any] = {
        "/sensor-data": {
            "post": _op(
                "Legacy upload (seed 000)",
                {"200": _json("Stored; the state piggybacks", ingest)},
                body=sensor_body,
                extra=ingest_errors,
            )
        },
        "/api/v1/user/{user_id}/data": {
            "parameters": [_USER],
            "post": _op(
                "Legacy upload (seed 001)",
                {"200": _json("Stored; the state piggybacks", ingest)},
                body=reading_body,
                extra=ingest_errors,
            ),
        },
        "/avatar/current-state/{user_id}": {
            "parameters": [_USER],
            "get": _op("Legacy state poll (seed 000)", {"200": _json("State", _ref("OldState"))}),
        },
        "/api/v1/user/{user_id}/state": {
            "parameters": [_USER],
            "get": _op("Legacy pet state (seed 001)", {"200": _json("State", seed_state)}),
        },
        "/api/v1/demo/trigger": {
            "post": _op(
                "Legacy demo trigger (seed 001): inject a scenario, then analyse "
                "(service, or the user's debug token)",
                {"202": _json("Accepted", {"type": "object"})},
                body=trigger,
                body_required=False,
                extra={"422": _problem("Unknown scenario or minutes out of range")},
            )
        },
    }
    for item in paths.values():
        for operation in item.values():
            if isinstance(operation, dict):  # bodies are JSON whatever their media type
                operation["responses"].pop("415", None)
    return paths


def _ref_properties(name: str) -> dict[str, Any]:
    schema = _components()["schemas"][name]
    properties: dict[str, Any] = schema["properties"]
    return properties


def _operational_paths() -> dict[str, Any]:
    not_found = _problem("No such file")
    return {
        "/openapi.json": {
            "get": _public("This document", {"200": _json("OpenAPI 3.1", {"type": "object"})})
        },
        "/healthz": {"get": _public("Liveness", {"200": _json("Alive", {"type": "object"})})},
        "/readyz": {
            "get": _public(
                "Readiness",
                {
                    "200": _json("Ready", {"type": "object"}),
                    "503": _problem("Starting, or the store is not reachable"),
                },
            )
        },
        "/metrics": {
            "get": _public(
                "Prometheus metrics",
                {"200": {"description": "Text exposition", "content": {"text/plain": {}}}},
            )
        },
        "/media/{key}": {
            "parameters": [_path_param("key", {"type": "string"})],
            "get": _public(
                "Avatar media (local media store)",
                {
                    "200": {"description": "The image", "content": {"image/*": {}}},
                    "304": {"description": "Not modified"},
                    "404": {
                        "description": "No such media (text from the media store, a problem "
                        "for a key no media can have)",
                        "content": {"text/plain": {}, _PROBLEM_TYPE: {"schema": _ref("Problem")}},
                    },
                },
            ),
        },
        "/debug": {
            "get": _public(
                "Browser debug page (reads its token from ?token=)",
                {
                    "200": {"description": "HTML", "content": {"text/html": {}}},
                    "304": {"description": "Not modified"},
                },
            )
        },
        "/debug/static/{name}": {
            "parameters": [_path_param("name", {"type": "string"})],
            "get": _public(
                "Debug page files",
                {
                    "200": {"description": "The file", "content": {"*/*": {}}},
                    "304": {"description": "Not modified"},
                    "404": not_found,
                },
            ),
        },
    }


@cache
def openapi_document() -> dict[str, Any]:
    """The document, built once."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "Companion push server", "version": "1"},
        "components": _components(),
        "paths": {**_v1_paths(), **_legacy_paths(), **_operational_paths()},
    }
