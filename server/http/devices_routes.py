"""Who is behind, and what came of the commands: ``GET /v1/users/{id}/devices`` and
``GET /v1/users/{id}/commands``; and the REST watch's implicit ``seen``.

Both routes answer any token of the user (phone, watch, debug page) or a service token. A
REST watch never sends ``seen``: its ``If-None-Match`` on ``GET /v1/users/{id}/state`` names
the state hash it shows, and when that is the current state's hash the route records "seen
the current version" (:func:`note_rest_seen`). A hash of an older state cannot be mapped to
its version (the store keeps only the current state), so the device's last record stays as
it was: it is behind by at least what the record says. The poll never waits for the
record (:meth:`~server.hops.devices.DeviceBook.record_soon`).
"""

from __future__ import annotations

import re
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response

from server import protocol as wire
from server.auth import Principal
from server.etag import none_match
from server.hops.commands import to_wire
from server.hops.devices import DeviceView
from server.http.access import authorize, json, services_of
from server.http.openapi_blocks import USER_PARAM, json_response, object_schema, operation
from server.problems import HTTPProblem
from server.services import Services
from server.store.base import UserState

DEVICE_PATTERN: Final = r"^[A-Za-z0-9._:-]{1,64}$"
"""The shape of a device name (as ``seen`` and frames name devices)."""
_DEVICE_RE: Final = re.compile(DEVICE_PATTERN)
EXPORT_COMMANDS: Final = 100_000
"""Commands an export lists at most (a user issues a few a day; 30 days are kept after expiry)."""


async def get_devices(request: Request) -> Response:
    """``GET /v1/users/{id}/devices``: each device's last-seen version and time, and how
    many versions it is behind the current one."""
    user_id = request.path_params["user_id"]
    authorize(request, user_id)
    services = services_of(request)
    state = await services.state.current(user_id)
    views = await services.devices.devices(user_id, state.version)
    return json(
        {
            "user_id": user_id,
            "version": state.version,
            "devices": [_device(view) for view in views],
        },
        headers={"Cache-Control": "no-store"},
    )


async def get_commands(request: Request) -> Response:
    """``GET /v1/users/{id}/commands``: the user's newest commands and their outcomes
    (``pending``, ``done``, ``dismissed``, ``expired``), newest first."""
    user_id = request.path_params["user_id"]
    authorize(request, user_id)
    commands = await services_of(request).commands.history(user_id)
    return json(
        {"user_id": user_id, "commands": [to_wire(command) for command in commands]},
        headers={"Cache-Control": "no-store"},
    )


async def exported(services: Services, user_id: str) -> dict[str, Any]:
    """The user's devices and commands for the GDPR export: ``devices`` (what each device
    has shown) and ``commands`` (every command kept, newest first)."""
    devices = await services.store.devices_seen(user_id)
    commands = await services.store.commands_of(user_id, limit=EXPORT_COMMANDS)
    return {
        "devices": [
            {"device": d.device, "kind": d.kind, "seen_version": d.version, "seen_at": d.seen_at}
            for d in devices
        ],
        "commands": [to_wire(command) for command in commands],
    }


def _device(view: DeviceView) -> dict[str, Any]:
    seen = view.seen
    return {
        "device": seen.device,
        "kind": seen.kind,
        "seen_version": seen.version,
        "seen_at": seen.seen_at,
        "behind": view.behind,
    }


def rest_device(request: Request, principal: Principal) -> str | None:
    """The device a REST poll is from: ``?device=`` or the token's kind, for phone and
    watch tokens (``None``: a debug page or service, which are not devices that show a
    state). Raises :class:`HTTPProblem` 400 for a malformed name."""
    name = request.query_params.get("device")
    if name is not None and not _DEVICE_RE.match(name):
        raise HTTPProblem(400, "device must be 1-64 of A-Z a-z 0-9 . _ : -")
    kind = principal.device.value
    if kind not in wire.SEEN_KINDS:
        return None
    return name or kind


def note_rest_seen(
    request: Request, principal: Principal, state: UserState, if_none_match: str | None
) -> None:
    """Record (in the background: the poll does not wait for it) that the polling device
    shows ``state`` if its ``If-None-Match`` names it."""
    device = rest_device(request, principal)
    if device is None or not none_match(if_none_match, f'"{state.state_hash}"'):
        return
    services_of(request).devices.record_soon(
        state.user_id, device, principal.device.value, state.version
    )


def openapi_paths() -> dict[str, Any]:
    """The OpenAPI paths of the two routes (merged into :mod:`server.http.openapi`)."""
    integer = {"type": "integer"}
    device = object_schema(
        {
            "device": {"type": "string", "pattern": DEVICE_PATTERN},
            "kind": {"type": "string"},
            "seen_version": integer,
            "seen_at": {**integer, "description": "epoch milliseconds"},
            "behind": {**integer, "description": "versions behind the current one"},
        },
        required=["device", "kind", "seen_version", "seen_at", "behind"],
    )
    command = object_schema(
        {
            "id": {"type": "string"},
            "kind": {"type": "string"},
            "params": {"type": "object"},
            "version": integer,
            "issued_at": integer,
            "expires_at": integer,
            "outcome": {"type": "string", "enum": ["pending", "done", "dismissed", "expired"]},
            "outcome_at": integer,
            "device": {"type": "string"},
        },
        required=["id", "kind", "params", "version", "issued_at", "expires_at", "outcome"],
    )
    devices = object_schema(
        {
            "user_id": {"type": "string"},
            "version": integer,
            "devices": {"type": "array", "items": device},
        },
        required=["user_id", "version", "devices"],
    )
    commands = object_schema(
        {"user_id": {"type": "string"}, "commands": {"type": "array", "items": command}},
        required=["user_id", "commands"],
    )
    return {
        "/v1/users/{user_id}/devices": {
            "parameters": [USER_PARAM],
            "get": operation(
                "Each device's last-seen version and time, and how far it is behind",
                {"200": json_response("The devices", devices)},
            ),
        },
        "/v1/users/{user_id}/commands": {
            "parameters": [USER_PARAM],
            "get": operation(
                "The user's newest commands and their outcomes, newest first",
                {"200": json_response("The commands", commands)},
            ),
        },
    }
