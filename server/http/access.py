"""What every REST route does first: who is calling, how often, and what they sent.

Order, the same on every route: the token (401), the user in the path (404 for a malformed
id, 403 for another user's), the caller's rate limit (429, the user's tier's), and only
then the body (415,
413, 400). So an anonymous caller learns nothing about bodies, and a flood of bad bodies
costs its sender's own budget. Failures are raised as :class:`~server.problems.HTTPProblem`
or :class:`~server.errors.AuthError`; the app's exception handlers answer them.

Tokens come in ``Authorization: Bearer …`` or, for browsers and legacy firmware that
cannot set headers, the ``token`` query parameter (the access log redacts query strings).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Final

import orjson
from starlette.requests import Request
from starlette.responses import Response

from brain.tiers import Limit, Tier
from server import protocol as wire
from server.auth import DeviceKind, Principal, bearer, verify
from server.problems import HTTPProblem
from server.ratelimit import BucketsByKey
from server.services import Services

MAX_BODY_BYTES: Final = 1024 * 1024
RATE_LIMIT_KEYS: Final = 10_000
"""Callers whose REST budget is remembered at once (least recently seen dropped first)."""

RateKey = tuple[str, DeviceKind]


def services_of(request: Request) -> Services:
    """The running server's services."""
    services: Services = request.app.state.services
    return services


def _limiter(request: Request, tier: Tier) -> BucketsByKey[RateKey]:
    """The REST limiter of ``tier``'s users (one per tier: a tier is a rate and a burst).

    The default tier's rate is the lower of the tier's and ``COMPANION_REST_RATE_PER_S`` /
    ``_BURST``, so the older settings still bound users of no known tier.
    """
    state = request.app.state
    limiters: dict[str, BucketsByKey[RateKey]] | None = getattr(state, "rest_limiters", None)
    if limiters is None:
        limiters = state.rest_limiters = {}
    limiter = limiters.get(tier.name)
    if limiter is None:
        settings = services_of(request).settings
        rate, burst = tier.rest_rate_per_s, tier.rest_rate_burst
        if tier is settings.tiers.default:
            rate, burst = min(rate, settings.rest_rate_per_s), min(burst, settings.rest_rate_burst)
        limiter = limiters[tier.name] = BucketsByKey(rate, max(burst, 1), max_keys=RATE_LIMIT_KEYS)
    return limiter


def authenticate(request: Request) -> Principal:
    """The caller's principal, within its rate limit (device tokens; service tokens have
    none).

    Raises :class:`~server.errors.AuthError` (401) for a missing, bad or expired token and
    :class:`HTTPProblem` 429 (with ``Retry-After``) when the token's budget is spent.
    """
    services = services_of(request)
    token = bearer(request.headers.get("authorization")) or request.query_params.get("token")
    principal = verify(
        token, services.settings.secret, now_s=int(services.clock()), cache=services.tokens
    )
    if principal.device is DeviceKind.SERVICE:
        # Operators' and the server's own tools (load driver, demo, scenario injector) need
        # throughput, and a leaked service token is a breach a rate limit would not contain.
        return principal
    # Keyed by what the signature vouches for, never by a raw client string; the tier is
    # the one last seen with the user's state (the default tier until then).
    tier = services.state.tier_book.of(principal.user_id)
    limiter = _limiter(request, tier)
    retry_after = limiter.take((principal.user_id, principal.device), services.clock())
    if retry_after:
        if services.cost is not None:
            services.cost.limited(tier, Limit.REST_RATE)
        raise HTTPProblem(
            429,
            "too many requests for this token; slow down",
            headers={"Retry-After": f"{retry_after:.0f}"},
        )
    return principal


def require_user(principal: Principal, user_id: str) -> None:
    """Check that ``principal`` may touch ``user_id``.

    Raises :class:`HTTPProblem` 404 for an id no user can have, and
    :class:`~server.errors.Forbidden` (403) for another user's.
    """
    if not wire.valid_user_id(user_id):
        raise HTTPProblem(404, "no such user: the id has a shape no user id has")
    principal.require(user_id)


def authorize(
    request: Request, user_id: str | None, kinds: Collection[DeviceKind] | None = None
) -> Principal:
    """:func:`authenticate`, then :func:`require_user` for ``user_id`` (unless ``None``),
    then 403 unless the token's device kind is one of ``kinds`` (any when ``None``)."""
    principal = authenticate(request)
    if user_id is not None:
        require_user(principal, user_id)
    if kinds is not None and principal.device not in kinds:
        allowed = " or ".join(sorted(kind.value for kind in kinds))
        raise HTTPProblem(403, f"this route needs a {allowed} token")
    return principal


def _is_json(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


async def read_json(
    request: Request, *, optional: bool = False, any_media_type: bool = False
) -> Any:
    """The request's JSON body (at most 1 MiB); ``{}`` when ``optional`` and empty.

    A body without ``Content-Type`` is read as JSON (legacy firmware sends none), and so is
    any body when ``any_media_type`` (the legacy routes: the old Lambdas parsed whatever
    came). Raises :class:`HTTPProblem`: 415 for another media type, 413 when too big, 400
    when it is not JSON.
    """
    content_type = request.headers.get("content-type")
    if not any_media_type and content_type is not None and not _is_json(content_type):
        raise HTTPProblem(415, "the body must be application/json")
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise HTTPProblem(413, f"body over {MAX_BODY_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise HTTPProblem(413, f"body over {MAX_BODY_BYTES} bytes")
    if optional and not body.strip():
        return {}
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HTTPProblem(400, f"body is not JSON: {exc.msg} at position {exc.pos}") from None


async def read_object(
    request: Request, *, optional: bool = False, any_media_type: bool = False
) -> dict[str, Any]:
    """:func:`read_json`, which must be a JSON object (400 otherwise)."""
    body = await read_json(request, optional=optional, any_media_type=any_media_type)
    if not isinstance(body, dict):
        raise HTTPProblem(400, "body must be a JSON object")
    return body


def json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response encoded with orjson."""
    return Response(orjson.dumps(data), status, headers, media_type="application/json")
