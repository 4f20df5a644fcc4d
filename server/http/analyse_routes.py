"""``POST /v1/demo/users/{id}/analyse``: schedule an analysis now (service tokens only).

The body is optional; ``{"force": true}`` commits the assessment even when it is no change
(a new version, so devices and the avatar saga hear about it). The answer is 202: the
analysis runs on the pipeline's workers, its result arrives as a delta.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from server.analysis.pipeline import pipeline_of
from server.http.demo_routes import require_service
from server.http.rest import HTTPProblem, json, read_json, services_of
from server.problems import problem


async def post_analyse(request: Request) -> Response:
    """Schedule an analysis of the user (``force`` optional); 503 without a pipeline."""
    user_id = request.path_params["user_id"]
    try:
        require_service(request, user_id)
        empty = request.headers.get("content-length") in (None, "0")
        body = {} if empty else await read_json(request)
        if not isinstance(body, dict):
            raise HTTPProblem(problem(400, "body must be a JSON object"))
        force = body.get("force", False)
        if not isinstance(force, bool):
            raise HTTPProblem(problem(422, f"force: must be true or false, got {force!r}"))
    except HTTPProblem as exc:
        return exc.response
    pipeline = pipeline_of(services_of(request))
    if pipeline is None:
        return problem(503, "the analysis pipeline is not running on this server")
    if not pipeline.schedule(user_id, force=force):
        return problem(503, "the analysis queue is full or stopping; retry later")
    return json({"scheduled": True, "user_id": user_id, "force": force}, status=202)
