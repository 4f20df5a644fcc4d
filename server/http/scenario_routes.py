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

from brain.model import Frame
from brain.scenarios import DEFAULT_EVERY_S, KINDS, generate
from server.auth import DeviceKind
from server.errors import FramesNotDurable, StoreError
from server.http.access import authorize, json, read_object, services_of
from server.problems import HTTPProblem

DEVICE: Final = "scenario"
DEFAULT_MINUTES: Final = 10
MAX_MINUTES: Final = 60
MAY_INJECT: Final = frozenset({DeviceKind.SERVICE, DeviceKind.DEBUG})
ALIASES: Final = {"kind": "kind", "scenario": "kind", "minutes": "minutes"}
"""Body names: ``kind`` and ``minutes``; ``scenario`` is the seeds' name of ``kind``
(their ``scenario_injector.py --scenario stress``)."""


def scenario_of(body: dict[str, Any]) -> tuple[str, float]:
    """The (kind, minutes) of a request body, kind in any letter case.

    Raises :class:`HTTPProblem` (422) naming the field.
    """
    named: dict[str, Any] = {}
    for name, value in body.items():
        if name not in ALIASES:
            raise HTTPProblem(422, f"{name[:64]}: unknown field")
        named[ALIASES[name]] = value
    kind = named.get("kind")
    kind = kind.lower() if isinstance(kind, str) else kind
    if kind not in KINDS:
        raise HTTPProblem(422, f"kind: must be one of {', '.join(KINDS)}")
    minutes = named.get("minutes", DEFAULT_MINUTES)
    if isinstance(minutes, bool) or not isinstance(minutes, int | float):
        raise HTTPProblem(422, "minutes: must be a number")
    if not DEFAULT_EVERY_S / 60 <= minutes <= MAX_MINUTES:
        raise HTTPProblem(422, f"minutes: must be between 0.5 and {MAX_MINUTES}")
    return str(kind), float(minutes)


async def inject(request: Request, user_id: str, kind: str, minutes: float) -> list[Frame]:
    """Ingest ``minutes`` of scenario ``kind`` for the user, ending now; the frames.

    Raises :class:`HTTPProblem` 503 when they could not be stored.
    """
    services = services_of(request)
    count = int(minutes * 60 // DEFAULT_EVERY_S)
    start_ms = services.now_ms() - (count - 1) * DEFAULT_EVERY_S * 1000
    frames = generate(kind, start_ms=start_ms, minutes=minutes, device=DEVICE)
    try:
        await services.ingestor.submit(user_id, frames)
    except (FramesNotDurable, StoreError):
        raise HTTPProblem(
            503, "frames not stored; send the request again", headers={"Retry-After": "1"}
        ) from None
    services.metrics.frames_accepted.labels("scenario").inc(len(frames))
    return frames


async def post_scenario(request: Request) -> Response:
    """Ingest ``minutes`` of scenario ``kind`` for the user, ending now."""
    user_id = request.path_params["user_id"]
    authorize(request, user_id, MAY_INJECT)
    kind, minutes = scenario_of(await read_object(request))
    frames = await inject(request, user_id, kind, minutes)
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
