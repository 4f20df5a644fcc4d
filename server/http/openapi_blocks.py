"""The building blocks of the OpenAPI document: response blocks, operations, and the
component schemas (frames from the protocol, state fields from the one list).

Everything here is derived, never typed twice: see :mod:`server.http.openapi`.
"""

from __future__ import annotations

from typing import Any, Final

from brain.model import USER_STATE_FIELDS, Action, StateField
from server.http.access import MAX_BODY_BYTES
from server.protocol import MAX_FRAMES_PER_MESSAGE, USER_ID_PATTERN, frame_json_schema

_REF = "#/components/schemas/"
PROBLEM_TYPE: Final = "application/problem+json"


def ref(name: str) -> dict[str, str]:
    """A ``$ref`` to component schema ``name``."""
    return {"$ref": _REF + name}


def problem_response(description: str, *, retry_after: bool = False) -> dict[str, Any]:
    """A response block of problem details (with a required ``Retry-After`` if asked)."""
    response: dict[str, Any] = {
        "description": description,
        "content": {PROBLEM_TYPE: {"schema": ref("Problem")}},
    }
    if retry_after:
        response["headers"] = {"Retry-After": {"schema": {"type": "string"}, "required": True}}
    return response


def json_response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    """A response block of JSON with ``schema``."""
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_AUTH: Final = {
    "401": problem_response("Missing, malformed or expired token"),
    "403": problem_response("Token of another user, or of a device kind this route does not serve"),
    "429": problem_response("Too many requests for this token", retry_after=True),
    "503": problem_response("The store is unavailable", retry_after=True),
}
_USER_ERRORS: Final = {"404": problem_response("No such user: the id has a shape no user id has")}
_BODY_ERRORS: Final = {
    "400": problem_response("Body is not JSON, or not of the expected shape"),
    "413": problem_response(
        f"Body over {MAX_BODY_BYTES} bytes, or over {MAX_FRAMES_PER_MESSAGE} frames"
    ),
    "415": problem_response("Body is not application/json"),
}
_SECURITY: Final[list[dict[str, list[str]]]] = [{"bearer": []}, {"token": []}]


def operation(
    summary: str,
    ok: dict[str, dict[str, Any]],
    *,
    body: dict[str, Any] | None = None,
    body_required: bool = True,
    user: bool = True,
    extra: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """An operation that takes a token: ``ok`` answers plus 401/403/429/503, 404 for a
    malformed user id when ``user``, and the body errors (400/413/415) with a ``body``."""
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


def public_operation(summary: str, responses: dict[str, Any]) -> dict[str, Any]:
    """An operation that needs no token."""
    return {"summary": summary, "security": [], "responses": responses}


def object_schema(
    properties: dict[str, Any], *, closed: bool = False, **more: Any
) -> dict[str, Any]:
    """An object schema; ``closed`` refuses properties not listed."""
    schema: dict[str, Any] = {"type": "object", "properties": properties, **more}
    if closed:
        schema["additionalProperties"] = False
    return schema


def choice(values: Any) -> dict[str, Any]:
    """A string schema that allows the values of an enum (or any strings) only."""
    return {"type": "string", "enum": [str(getattr(v, "value", v)) for v in values]}


def _state_schema(fields: tuple[StateField, ...]) -> dict[str, Any]:
    return object_schema(
        {f.name: dict(f.schema) for f in fields}, required=[f.name for f in fields]
    )


def path_param(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    """A required path parameter."""
    return {"name": name, "in": "path", "required": True, "schema": schema}


USER_PARAM: Final = path_param("user_id", {"type": "string", "pattern": USER_ID_PATTERN})


def components() -> dict[str, Any]:
    """The ``components`` of the document: security schemes and schemas."""
    rejection = object_schema(
        {"index": {"type": "integer"}, "field": {"type": "string"}, "reason": {"type": "string"}},
        required=["index", "field", "reason"],
    )
    # Health metrics are the analysis' to compute: the demo route does not write them.
    visible = tuple(f for f in USER_STATE_FIELDS if f.visible and f.name != "health")
    demo_fields = {f.name: dict(f.schema) for f in visible}
    demo_fields["actions"] = {"type": "array", "items": choice(Action)}
    demo_fields["reasoning"] = {"type": "string", "maxLength": 500}
    demo_fields["image_url"] = {
        "type": ["string", "null"],
        "maxLength": 2048,
        "pattern": "^(https?://|/media/)",
    }
    old_state = object_schema(
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
    legacy_reading = object_schema(
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
            "DemoChanges": object_schema(
                {**demo_fields, "force": {"type": "boolean"}}, closed=True
            ),
            "OldState": old_state,
            "LegacyReading": legacy_reading,
            "Problem": object_schema(
                {
                    "type": {"type": "string"},
                    "title": {"type": "string"},
                    "status": {"type": "integer"},
                    "detail": {"type": "string"},
                    "code": {"type": "string"},
                    "rejected": {"type": "array", "items": ref("Rejection")},
                },
                required=["type", "title", "status", "detail"],
            ),
        },
    }


def ref_properties(name: str) -> dict[str, Any]:
    """The properties of component schema ``name``, to spread into another object."""
    schema = components()["schemas"][name]
    properties: dict[str, Any] = schema["properties"]
    return properties
