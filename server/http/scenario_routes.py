"""``POST /v1/demo/users/{id}/scenario``: inject a synthetic scenario's frames for a user.

Body ``{"kind": "stress", "minutes": 10}``: the frames of :func:`brain.scenarios.generate`
for that situation, ending now (one every 30 s, device ``scenario``), are ingested through
the same write-behind path as any upload (``services.ingestor.submit``), so the analysis
pipeline and the debug peers' charts see them like real frames. Nothing else happens: the
route never writes a state; a mood changes only if the brain decides so from the frames.

Who may call it: a ``service`` token for any user, or a ``debug`` token **of the same
user**. Debug pages are per user (their token names the user they show), and the inject
buttons of the page must work with the page's own token; a debug token can already read
that user's state and frames, and injected frames are marked by their device name and
bounded (at most :data:`MAX_MINUTES` minutes, 120 frames, per call). Phone and watch
tokens may not: a device should upload what it measured, not a script.
"""

from __future__ import annotations

from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response

from brain.scenarios import DEFAULT_EVERY_S, KINDS, generate
from server.auth import DeviceKind
from server.errors import FramesNotDurable, StoreError
from server.http.rest import HTTPProblem, authorize, json, read_json, services_of
from server.problems import problem

DEVICE: Final = "scenario"
DEFAULT_MINUTES: Final = 10
MAX_MINUTES: Final = 60


def _body(body: Any) -> tuple[str, float]:
    """The (kind, minutes) of a request body. Raises :class:`HTTPProblem` (400, 422)."""
    if not isinstance(body, dict):
        raise HTTPProblem(problem(400, "body must be a JSON object"))
    kind = body.get("kind")
    if kind not in KINDS:
        raise HTTPProblem(problem(422, f"kind: must be one of {', '.join(KINDS)}"))
    minutes = body.get("minutes", DEFAULT_MINUTES)
    if isinstance(minutes, bool) or not isinstance(minutes, int | float):
        raise HTTPProblem(problem(422, "minutes: must be a number"))
    if not DEFAULT_EVERY_S / 60 <= minutes <= MAX_MINUTES:
        raise HTTPProblem(problem(422, f"minutes: must be between 0.5 and {MAX_MINUTES}"))
    unknown = set(body) - {"kind", "minutes"}
    if unknown:
        raise HTTPProblem(problem(422, f"{sorted(unknown)[0]}: unknown field"))
    return str(kind), float(minutes)


async def post_scenario(request: Request) -> Response:
    """Ingest ``minutes`` of scenario ``kind`` for the user, ending now."""
    user_id = request.path_params["user_id"]
    try:
        principal = authorize(request, user_id)
        if principal.device not in (DeviceKind.SERVICE, DeviceKind.DEBUG):
            raise HTTPProblem(
                problem(403, "scenarios need a service token or the user's debug token")
            )
        kind, minutes = _body(await read_json(request))
    except HTTPProblem as exc:
        return exc.response
    services = services_of(request)
    count = int(minutes * 60 // DEFAULT_EVERY_S)
    start_ms = services.now_ms() - (count - 1) * DEFAULT_EVERY_S * 1000
    frames = generate(kind, start_ms=start_ms, minutes=minutes, device=DEVICE)
    try:
        await services.ingestor.submit(user_id, frames)
    except (FramesNotDurable, StoreError):
        return problem(503, "frames not stored; send the request again")
    services.metrics.frames_accepted.labels("scenario").inc(len(frames))
    return json(
        {
            "user_id": user_id,
            "kind": kind,
            "device": DEVICE,
            "accepted": len(frames),
            "from_ts": frames[0].ts,
            "to_ts": frames[-1].ts,
        }
    )
