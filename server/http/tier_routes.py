"""A user's tier: ``PUT /v1/users/{id}/tier`` (service tokens) sets it, ``GET`` shows it with
its limits and what the user cost today.

The tier is kept with the profile (:attr:`brain.model.Profile.tier`), so it survives
restarts, reaches every node through the store, and is exported and erased with the user.
Setting it does not move the state's version: nothing a device displays changed. A name
outside the configured tiers (``COMPANION_TIERS``) is 422, naming the ones there are.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response

from brain.cost import CostPerUser
from brain.tiers import DEFAULT_TIERS, NAME_PATTERN, Tier, tier_to_dict
from server.auth import DeviceKind
from server.http.access import authorize, json, read_object, services_of
from server.http.openapi_blocks import (
    USER_PARAM,
    json_response,
    object_schema,
    operation,
    problem_response,
)
from server.problems import HTTPProblem

SERVICE_ONLY: Final = frozenset({DeviceKind.SERVICE})


def _answer(user_id: str, tier: Tier, cost: CostPerUser | None) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "tier": tier.name,
        "limits": tier_to_dict(tier),
        "cost_today": None if cost is None else cost.to_dict(),
    }


async def get_tier(request: Request) -> Response:
    """The user's tier, its limits and today's cost on this node (the user's own tokens or
    a service token)."""
    user_id = request.path_params["user_id"]
    authorize(request, user_id)
    services = services_of(request)
    state = await services.state.current(user_id)
    tier = services.settings.tiers.tier_of(state.profile)
    cost = None if services.cost is None else services.cost.today(user_id)
    return json(_answer(user_id, tier, cost))


async def put_tier(request: Request) -> Response:
    """Set the user's tier (``{"tier": name}``, service token). 400 for another field, 422
    for a tier that is not configured."""
    user_id = request.path_params["user_id"]
    authorize(request, user_id, SERVICE_ONLY)
    body = await read_object(request)
    unknown = sorted(set(body) - {"tier"})
    if unknown:
        raise HTTPProblem(400, f"{unknown[0][:64]}: unknown field (tier)")
    services = services_of(request)
    tiers = services.settings.tiers
    name = body.get("tier")
    if not isinstance(name, str) or name not in tiers:
        raise HTTPProblem(422, f"tier: must be one of {', '.join(tiers)}")
    state = await services.state.change_profile(user_id, lambda p: replace(p, tier=name))
    tier = tiers.tier_of(state.profile)
    cost = None if services.cost is None else services.cost.today(user_id)
    return json(_answer(user_id, tier, cost))


def tier_paths() -> dict[str, Any]:
    """The OpenAPI entries of ``GET`` and ``PUT /v1/users/{id}/tier``."""
    answer = object_schema(
        {
            "user_id": {"type": "string"},
            "tier": {"type": "string"},
            "limits": {"type": "object", "description": "the tier's limits (docs/cost.md)"},
            "cost_today": {
                "type": ["object", "null"],
                "description": "today's dollars by service, as this node metered them",
            },
        },
        required=["user_id", "tier", "limits", "cost_today"],
    )
    body = object_schema(
        {
            "tier": {
                "anyOf": [
                    {"type": "string", "enum": list(DEFAULT_TIERS)},
                    {"type": "string", "pattern": f"^{NAME_PATTERN.pattern}$"},
                ],
                "description": "a built-in tier, or one COMPANION_TIERS adds",
            }
        },
        closed=True,
        required=["tier"],
        example={"tier": "premium"},
    )
    return {
        "/v1/users/{user_id}/tier": {
            "parameters": [USER_PARAM],
            "get": operation(
                "The user's tier, its limits and today's cost (the user's tokens or service)",
                {"200": json_response("The tier", answer)},
            ),
            "put": operation(
                "Set the user's tier (service token); the state's version does not move",
                {"200": json_response("The tier now", answer)},
                body=body,
                extra={"422": problem_response("Not a configured tier (the detail names them)")},
            ),
        },
    }
