"""What the demo tools do to a server: scenarios, history, profile and environment, over REST.

Every call takes a :class:`Target` (the server, a service token and the user) and goes in
through the server's normal doors; none of them writes a state.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import httpx

from brain.model import Frame
from brain.scenarios import DEFAULT_EVERY_S, generate as generate_frames, history
from clients.connect.access import Endpoints
from server.protocol import MAX_FRAMES_PER_MESSAGE, frame_to_wire

ENVIRONMENTS = ("hike", "heat", "flight")
STYLES = ("strict", "encouraging", "neutral")
TONES = ("direct", "gentle")


class DemoError(Exception):
    """The server refused a demo request (the message carries its status and detail)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    """Where a demo tool acts: the server, a service token, and the user."""

    server: Endpoints
    token: str
    user: str

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.token}", "User-Agent": "companion-demo/1"}
        return httpx.AsyncClient(base_url=self.server.http, headers=headers, **kwargs)


def _check(response: httpx.Response) -> dict[str, Any]:
    if response.is_error:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise DemoError(
            f"{response.request.method} {response.request.url.path}: "
            f"{response.status_code} {detail}"
        )
    body: dict[str, Any] = response.json()
    return body


def ending_now(kind: str, minutes: float, *, now_ms: int, device: str) -> list[Frame]:
    """``minutes`` of scenario ``kind`` whose last frame is at ``now_ms``.

    Raises :class:`ValueError` for an unknown kind or a duration under one frame interval.
    """
    count = int(minutes * 60 // DEFAULT_EVERY_S)
    if count < 1:
        raise ValueError(f"minutes must cover at least one frame ({DEFAULT_EVERY_S} s)")
    start_ms = now_ms - (count - 1) * DEFAULT_EVERY_S * 1000
    return generate_frames(kind, start_ms=start_ms, minutes=minutes, device=device)


async def upload(http: httpx.AsyncClient, user: str, frames: Sequence[Frame]) -> dict[str, Any]:
    """POST ``frames`` in batches of at most 500; the totals and the time range.

    Raises :class:`DemoError` when the server refuses a batch, :class:`httpx.HTTPError` on
    network errors.
    """
    accepted = rejected = 0
    for start in range(0, len(frames), MAX_FRAMES_PER_MESSAGE):
        batch = [frame_to_wire(f) for f in frames[start : start + MAX_FRAMES_PER_MESSAGE]]
        body = _check(await http.post(f"/v1/users/{user}/frames", json={"frames": batch}))
        accepted += body["accepted"]
        rejected += len(body["rejected"])
    return {
        "user_id": user,
        "accepted": accepted,
        "rejected": rejected,
        "batches": -(-len(frames) // MAX_FRAMES_PER_MESSAGE),
        "from_ts": frames[0].ts if frames else None,
        "to_ts": frames[-1].ts if frames else None,
    }


# -- the tools --------------------------------------------------------------------------


async def scenario(target: Target, kind: str, minutes: float = 10) -> dict[str, Any]:
    """Inject ``minutes`` of ``kind`` ending now (the server generates and ingests them).

    Raises :class:`DemoError` or :class:`httpx.HTTPError`.
    """
    async with target.client(timeout=30) as http:
        body = {"kind": kind, "minutes": minutes}
        return _check(await http.post(f"/v1/demo/users/{target.user}/scenario", json=body))


async def seed_history(
    target: Target, profile: str, days: int, *, now_ms: int | None = None
) -> dict[str, Any]:
    """Upload ``days`` of ``profile`` everyday frames ending now (one per 10 minutes).

    Raises :class:`ValueError` for a bad profile or span, :class:`DemoError` or
    :class:`httpx.HTTPError` when the upload fails.
    """
    end_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    frames = history(profile, days=days, end_ms=end_ms, device="history")
    async with target.client(timeout=60) as http:
        return {"profile": profile, "days": days, **await upload(http, target.user, frames)}


async def set_profile(
    target: Target, *, style: str | None, tone: str | None, base_avatar: str | None
) -> dict[str, Any]:
    """Set the user's coach persona and base avatar (fields left ``None`` keep their value).

    Raises :class:`DemoError` or :class:`httpx.HTTPError`.
    """
    body = {
        k: v
        for k, v in {"style": style, "tone": tone, "base_avatar": base_avatar}.items()
        if v is not None
    }
    async with target.client(timeout=30) as http:
        return _check(await http.put(f"/v1/demo/users/{target.user}/profile", json=body))


async def environment(
    target: Target, kind: str, minutes: float = 10, *, now_ms: int | None = None
) -> dict[str, Any]:
    """Upload ``minutes`` of frames in environment ``kind`` (hike, heat, flight), ending now.

    Raises :class:`ValueError` for another kind, :class:`DemoError` or :class:`httpx.HTTPError`.
    """
    if kind not in ENVIRONMENTS:
        raise ValueError(f"environment must be one of {', '.join(ENVIRONMENTS)}, got {kind!r}")
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    frames = ending_now(kind, minutes, now_ms=now, device=f"env-{kind}")
    async with target.client(timeout=30) as http:
        result = await upload(http, target.user, frames)
    envs = [f.env for f in frames if f.env is not None]
    altitudes = [e.altitude_m for e in envs if e.altitude_m is not None]
    speeds = [e.speed_mps for e in envs if e.speed_mps is not None]
    return {
        "environment": kind,
        **result,
        "altitude_m": [min(altitudes), max(altitudes)] if altitudes else None,
        "speed_mps": [min(speeds), max(speeds)] if speeds else None,
        "weather": sorted({e.weather for e in envs if e.weather}),
    }
