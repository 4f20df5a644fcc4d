"""``POST /v1/demo/users/{id}/analyse``: schedule an analysis now (service tokens only).

The body is optional; ``{"force": true}`` commits the assessment even when it is no change
(a new version, so devices and the avatar saga hear about it). The answer is 202: the
analysis runs on the pipeline's workers, its result arrives as a delta.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from server.analysis.pipeline import pipeline_of
from server.http.access import json, read_object, services_of
from server.http.demo_routes import require_service
from server.problems import HTTPProblem


async def post_analyse(request: Request) -> Response:
    """Schedule an analysis of the user (``force`` optional); 503 without a pipeline."""
    user_id = request.path_params["user_id"]
    require_service(request, user_id)
    body = await read_object(request, optional=True)
    force = body.get("force", False)
    if not isinstance(force, bool):
        raise HTTPProblem(422, "force: must be true or false")
    if set(body) - {"force"}:
        raise HTTPProblem(422, "unknown field (expected only force)")
    if not schedule(request, user_id, force=force):
        raise HTTPProblem(
            503, "the analysis queue is full or stopping; retry later", headers={"Retry-After": "1"}
        )
    return json({"scheduled": True, "user_id": user_id, "force": force}, status=202)


def schedule(request: Request, user_id: str, *, force: bool) -> bool:
    """Ask the pipeline for an analysis of ``user_id``: ``False`` if it cannot take one.

    Raises :class:`HTTPProblem` 503 when this server runs no analysis pipeline.
    """
    pipeline = pipeline_of(services_of(request))
    if pipeline is None:
        raise HTTPProblem(503, "the analysis pipeline is not running on this server")
    return pipeline.schedule(user_id, force=force)
