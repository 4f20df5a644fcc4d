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
from typing import Any

from brain.avatar.prompt import Species
from brain.model import CoachStyle, CoachTone
from brain.scenarios import KINDS
from server.http.devices_routes import DEVICE_PATTERN, openapi_paths as devices_paths
from server.http.legacy import STRESS_LEVELS
from server.http.openapi_blocks import (
    PROBLEM_TYPE,
    USER_PARAM,
    choice,
    components,
    json_response,
    object_schema,
    operation,
    path_param,
    problem_response,
    public_operation,
    ref,
    ref_properties,
)
from server.http.openapi_history import history_paths, history_schemas
from server.http.rest import MAX_WAIT_S
from server.http.scenario_routes import MAX_MINUTES
from server.http.tier_routes import tier_paths
from server.protocol import MAX_FRAMES_PER_MESSAGE


def _v1_paths() -> dict[str, Any]:
    frames = {"type": "array", "items": ref("Frame"), "maxItems": MAX_FRAMES_PER_MESSAGE}
    upload = object_schema(
        {
            "accepted": {"type": "integer"},
            "rejected": {"type": "array", "items": ref("Rejection")},
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
        {"name": "device", "in": "query", "schema": {"type": "string", "pattern": DEVICE_PATTERN}},
    ]
    profile = {
        "style": choice(CoachStyle),
        "tone": choice(CoachTone),
        "base_avatar": choice(Species),
    }
    scenario = object_schema(
        {
            "kind": choice(KINDS),
            "minutes": {"type": "number", "minimum": 0.5, "maximum": MAX_MINUTES},
        },
        closed=True,
        required=["kind"],
    )
    return {
        "/v1/users/{user_id}/frames": {
            "parameters": [USER_PARAM],
            "post": operation(
                "Upload frames; the answer carries version and state_hash (piggyback poll)",
                {"200": json_response("Stored (some frames may be rejected)", upload)},
                body={"oneOf": [frames, object_schema({"frames": frames}, required=["frames"])]},
                extra={
                    "422": problem_response("No valid frame; `rejected` says why"),
                    "503": problem_response(
                        "Frames not durable; send them again", retry_after=True
                    ),
                },
            ),
        },
        "/v1/users/{user_id}/state": {
            "parameters": [USER_PARAM],
            "get": {
                **operation(
                    "Current state; ETag = state hash; long-poll with wait (and since)",
                    {
                        "200": json_response("The state", ref("State")),
                        "304": {"description": "Not modified (If-None-Match)"},
                    },
                    extra={"400": problem_response("Bad wait, since or device")},
                ),
                "parameters": state_params,
            },
        },
        "/v1/users/{user_id}/export": {
            "parameters": [USER_PARAM],
            "get": operation(
                "Everything stored about a user (phone or service token)",
                {"200": json_response("The export", {"type": "object"})},
            ),
        },
        "/v1/users/{user_id}": {
            "parameters": [USER_PARAM],
            "delete": operation(
                "Erase a user's data (phone or service token)",
                {
                    "200": json_response(
                        "Erased",
                        object_schema(
                            {"user_id": {"type": "string"}, "deleted": {"type": "integer"}},
                            required=["user_id", "deleted"],
                        ),
                    )
                },
            ),
        },
        "/v1/demo/users/{user_id}/state": {
            "parameters": [USER_PARAM],
            "post": operation(
                "Commit state changes (service token)",
                {"200": json_response("Committed, or unchanged", ref("State"))},
                body=ref("DemoChanges"),
                extra={
                    "409": problem_response("The state changed meanwhile; send again"),
                    "422": problem_response("A field is unknown or out of range (named in detail)"),
                },
            ),
        },
        "/v1/demo/users/{user_id}/profile": {
            "parameters": [USER_PARAM],
            "put": operation(
                "Set coach persona and base avatar (service token; any letter case)",
                {"200": json_response("The profile", {"type": "object"})},
                body=object_schema(profile, closed=True),
            ),
        },
        "/v1/demo/users/{user_id}/scenario": {
            "parameters": [USER_PARAM],
            "post": operation(
                "Ingest a synthetic scenario (service, or the user's debug token)",
                {"200": json_response("Ingested", {"type": "object"})},
                body=scenario,
                extra={
                    "422": problem_response("Unknown kind or minutes out of range"),
                },
            ),
        },
        "/v1/demo/users/{user_id}/analyse": {
            "parameters": [USER_PARAM],
            "post": operation(
                "Schedule an analysis, optionally forced (service token)",
                {"202": json_response("Scheduled", {"type": "object"})},
                body=object_schema({"force": {"type": "boolean"}}, closed=True),
                body_required=False,
                extra={
                    "422": problem_response("force is not a boolean"),
                    "503": problem_response(
                        "No pipeline here, or its queue is full", retry_after=False
                    ),
                },
            ),
        },
    }


def _legacy_paths() -> dict[str, Any]:
    ingest = object_schema(
        {
            "status": {"type": "string"},
            "accepted": {"type": "integer"},
            "rejected": {"type": "array", "items": ref("Rejection")},
            **ref_properties("OldState"),
        },
        required=["status", "accepted", "rejected"],
    )
    reading_body = {
        "allOf": [
            ref("LegacyReading"),
            object_schema({"readings": {"type": "array", "items": ref("LegacyReading")}}),
        ]
    }
    sensor_body = {
        "allOf": [
            reading_body,
            object_schema({"user_id": {"type": "string"}}, required=["user_id"]),
        ]
    }
    ingest_errors = {
        "422": problem_response("No valid reading"),
        "503": problem_response("Readings not durable; send them again", retry_after=True),
    }
    seed_state = {
        "allOf": [
            ref("State"),
            ref("OldState"),
            object_schema(
                {
                    "pet_state": object_schema(
                        {
                            "mood": {"type": "string"},
                            "energy_budget": {"type": "integer"},
                            "last_update": {"type": ["string", "null"], "format": "date-time"},
                        }
                    ),
                    "health_metrics": object_schema(
                        {
                            "hrv_trend": {
                                "type": ["array", "null"],
                                "items": {"type": "number"},
                                "description": "daily mean RMSSD (ms), last 3 days, oldest first",
                            },
                            "sleep_hours": {
                                "type": ["array", "null"],
                                "items": {"type": "number"},
                                "description": "hours asleep, last 3 nights, oldest first",
                            },
                            "stress_level": choice(sorted({*STRESS_LEVELS.values(), "low"})),
                        }
                    ),
                },
                required=["pet_state", "health_metrics"],
            ),
        ]
    }
    trigger = object_schema(
        {
            "user_id": {"type": "string"},
            "scenario": choice(KINDS),
            "kind": choice(KINDS),
            "minutes": {"type": "number", "minimum": 0.5, "maximum": MAX_MINUTES},
        },
        closed=True,
    )
    paths: dict[str, Any] = {
        "/sensor-data": {
            "post": operation(
                "Legacy upload (seed 000)",
                {"200": json_response("Stored; the state piggybacks", ingest)},
                body=sensor_body,
                extra=ingest_errors,
            )
        },
        "/api/v1/user/{user_id}/data": {
            "parameters": [USER_PARAM],
            "post": operation(
                "Legacy upload (seed 001)",
                {"200": json_response("Stored; the state piggybacks", ingest)},
                body=reading_body,
                extra=ingest_errors,
            ),
        },
        "/avatar/current-state/{user_id}": {
            "parameters": [USER_PARAM],
            "get": operation(
                "Legacy state poll (seed 000)", {"200": json_response("State", ref("OldState"))}
            ),
        },
        "/api/v1/user/{user_id}/state": {
            "parameters": [USER_PARAM],
            "get": operation(
                "Legacy pet state (seed 001)", {"200": json_response("State", seed_state)}
            ),
        },
        "/api/v1/demo/trigger": {
            "post": operation(
                "Legacy demo trigger (seed 001): inject a scenario, then analyse "
                "(service, or the user's debug token)",
                {"202": json_response("Accepted", {"type": "object"})},
                body=trigger,
                body_required=False,
                extra={"422": problem_response("Unknown scenario or minutes out of range")},
            )
        },
    }
    for item in paths.values():
        for legacy_operation in item.values():
            if isinstance(legacy_operation, dict):  # bodies are JSON whatever their media type
                legacy_operation["responses"].pop("415", None)
    return paths


def _operational_paths() -> dict[str, Any]:
    not_found = problem_response("No such file")
    return {
        "/openapi.json": {
            "get": public_operation(
                "This document", {"200": json_response("OpenAPI 3.1", {"type": "object"})}
            )
        },
        "/healthz": {
            "get": public_operation("Liveness", {"200": json_response("Alive", {"type": "object"})})
        },
        "/readyz": {
            "get": public_operation(
                "Readiness",
                {
                    "200": json_response("Ready", {"type": "object"}),
                    "503": problem_response("Starting, or the store is not reachable"),
                },
            )
        },
        "/metrics": {
            "get": public_operation(
                "Prometheus metrics",
                {"200": {"description": "Text exposition", "content": {"text/plain": {}}}},
            )
        },
        "/media/{key}": {
            "parameters": [path_param("key", {"type": "string"})],
            "get": public_operation(
                "Avatar media (local media store)",
                {
                    "200": {"description": "The image", "content": {"image/*": {}}},
                    "304": {"description": "Not modified"},
                    "404": {
                        "description": "No such media (text from the media store, a problem "
                        "for a key no media can have)",
                        "content": {"text/plain": {}, PROBLEM_TYPE: {"schema": ref("Problem")}},
                    },
                },
            ),
        },
        "/debug": {
            "get": public_operation(
                "Browser debug page (reads its token from ?token=)",
                {
                    "200": {"description": "HTML", "content": {"text/html": {}}},
                    "304": {"description": "Not modified"},
                },
            )
        },
        "/debug/static/{name}": {
            "parameters": [path_param("name", {"type": "string"})],
            "get": public_operation(
                "Debug page files",
                {
                    "200": {"description": "The file", "content": {"*/*": {}}},
                    "304": {"description": "Not modified"},
                    "404": not_found,
                },
            ),
        },
    }


def _with_history(parts: dict[str, Any]) -> dict[str, Any]:
    return {**parts, "schemas": {**parts["schemas"], **history_schemas()}}


@cache
def openapi_document() -> dict[str, Any]:
    """The document, built once."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "Companion push server", "version": "1"},
        "components": _with_history(components()),
        "paths": {
            **_v1_paths(),
            **history_paths(),
            **tier_paths(),
            **devices_paths(),
            **_legacy_paths(),
            **_operational_paths(),
        },
    }
