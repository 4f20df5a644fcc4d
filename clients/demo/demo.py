"""``companion demo …``: put a user into a situation, a history, a persona, or a story.

    companion demo scenario stress --user alice          # 10 min of stress frames, ending now
    companion demo seed-history --profile burnout --days 14 --user alice
    companion demo profile --style strict --tone direct --base-avatar fox --user alice
    companion demo environment --scenario hike --user alice
    companion demo run --user alice                      # bridge + watches + a story, < 1 min

Every subcommand talks to a running server with a **service** token (``--token``, or
``COMPANION_TOKEN``); ``--user`` chooses the user (default: the token's). Without a token
the tool asks ``companion token`` on this machine for one (:func:`clients.connect.access.mint`),
which works beside a server started with the same ``COMPANION_*`` settings.

Frames go in through the server's normal doors: ``scenario`` through
``POST /v1/demo/users/{id}/scenario`` (the debug page's buttons use it too), history and
environment frames through ``POST /v1/users/{id}/frames`` in batches of at most 500 (a
service token may write old timestamps). None of these writes a state: a mood changes only
when the server's analysis decides so. ``run`` is in :mod:`clients.demo.story`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import httpx

from brain.model import Frame
from brain.scenarios import DEFAULT_EVERY_S, KINDS, history
from brain.scenarios import generate as generate_frames
from clients.connect.access import Endpoints, TokenError, add_server_flags, endpoints, mint, user_of
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


# -- command line -------------------------------------------------------------------------


def add_parser(subparsers: Any) -> None:
    """Register ``companion demo`` and its subcommands."""
    demo = subparsers.add_parser("demo", help="demo tools: scenarios, history, profile, a story")
    sub = demo.add_subparsers(dest="demo_command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(name, help=help_text)
        add_server_flags(parser, token_help="a service token (default: minted on this machine)")
        parser.add_argument("--user", help="the user to act on (default: the token's user)")
        parser.add_argument("--json", action="store_true", help="print the answer as JSON")
        parser.set_defaults(func=main)
        return parser

    p = command("scenario", "inject a scenario's frames for the user, ending now")
    p.add_argument("kind", choices=KINDS)
    p.add_argument("--minutes", type=float, default=10.0)
    p = command("seed-history", "upload days of everyday frames (a baseline)")
    p.add_argument("--profile", choices=("healthy", "burnout"), default="healthy")
    p.add_argument("--days", type=int, default=14)
    p = command("profile", "set the coach persona and base avatar")
    p.add_argument("--style", choices=STYLES)
    p.add_argument("--tone", choices=TONES)
    p.add_argument("--base-avatar", help="letters or digits, e.g. fox")
    p = command("environment", "upload frames with an environment (altitude, weather, speed)")
    p.add_argument("--scenario", choices=ENVIRONMENTS, required=True)
    p.add_argument("--minutes", type=float, default=10.0)
    p = command("run", "bridge + watches + a story (calm, stress, calm, exercise)")
    p.add_argument("--chapter-seconds", type=float, default=12.0)
    p.add_argument("--every", type=float, default=1.0, help="seconds between streamed frames")
    p.add_argument("--phone-token", help="the user's phone token (default: minted)")
    p.add_argument(
        "--drive",
        choices=("auto", "frames", "manual"),
        default="auto",
        help="auto: frames, and the demo state route if the server does not react",
    )


async def _target(args: argparse.Namespace) -> Target:
    server = endpoints(args.server)
    if args.token:
        return Target(server, args.token, args.user or user_of(args.token))
    user = args.user or "alice"
    return Target(server, await mint(user, "service"), user)


async def _dispatch(args: argparse.Namespace) -> dict[str, Any]:
    target = await _target(args)
    name = args.demo_command
    if name == "scenario":
        return await scenario(target, args.kind, args.minutes)
    if name == "seed-history":
        return await seed_history(target, args.profile, args.days)
    if name == "profile":
        return await set_profile(
            target, style=args.style, tone=args.tone, base_avatar=args.base_avatar
        )
    if name == "environment":
        return await environment(target, args.scenario, args.minutes)
    from clients.demo.story import Story

    story = Story(target, chapter_s=args.chapter_seconds, every_s=args.every, drive=args.drive)
    return await story.play(phone_token=args.phone_token)


def main(args: argparse.Namespace) -> int:
    """Run one demo subcommand; print its answer; return the exit code."""
    try:
        result = asyncio.run(_dispatch(args))
    except (DemoError, TokenError, ValueError) as exc:
        print(f"companion demo {args.demo_command}: {exc}", file=sys.stderr)
        return 1
    except httpx.HTTPError as exc:
        print(
            f"companion demo {args.demo_command}: cannot reach {args.server}: {exc}",
            file=sys.stderr,
        )
        return 1
    if args.json:
        print(json.dumps(result), flush=True)
    else:
        for key, value in result.items():
            print(f"{key:>12}: {value}", flush=True)
    return 0 if result.get("ok", True) else 1
