"""``companion demo …``: put a user into a situation, a history, a persona, or a story.

    companion demo scenario stress --user alice          # 10 min of stress frames, ending now
    companion demo seed-history --profile burnout --days 14 --user alice
    companion demo profile --style strict --tone direct --base-avatar fox --user alice
    companion demo environment --scenario hike --user alice
    companion demo run --user alice                      # bridge + watches + a story, ~1 min

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
import json
import sys
from typing import Any

import httpx

from brain.scenarios import KINDS
from clients.connect.access import TokenError, add_server_flags, endpoints, mint, user_of
from clients.demo.story import Story
from clients.demo.target import (
    ENVIRONMENTS,
    STYLES,
    TONES,
    DemoError,
    Target,
    environment,
    scenario,
    seed_history,
    set_profile,
)

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
    p.add_argument(
        "kind", nargs="?", type=str.lower, choices=KINDS, help="the situation the frames show"
    )
    p.add_argument(
        "--scenario",
        dest="scenario_kind",
        type=str.lower,
        choices=KINDS,
        help="the same, as the seeds' demo spells it (--scenario stress)",
    )
    p.add_argument(
        "--minutes", type=float, default=10.0, help="minutes of frames, one per 30 s (default 10)"
    )
    p = command("seed-history", "upload days of everyday frames (a baseline)")
    p.add_argument(
        "--profile",
        choices=("healthy", "burnout"),
        default="healthy",
        help="steady, or drifting to a higher resting HR and lower HRV (default healthy)",
    )
    p.add_argument("--days", type=int, default=14, help="days of history, ending now (default 14)")
    p = command("profile", "set the coach persona and base avatar")
    p.add_argument(
        "--style", type=str.lower, choices=STYLES, help="how the coach advises (any case)"
    )
    p.add_argument(
        "--tone", type=str.lower, choices=TONES, help="how the coach states the figures (any case)"
    )
    p.add_argument("--base-avatar", help="letters or digits, e.g. fox")
    p = command("environment", "upload frames with an environment (altitude, weather, speed)")
    p.add_argument(
        "--scenario", choices=ENVIRONMENTS, required=True, help="the environment the frames show"
    )
    p.add_argument(
        "--minutes", type=float, default=10.0, help="minutes of frames, one per 30 s (default 10)"
    )
    p = command("run", "bridge + watches + a story (calm, stress, exercise, recovery)")
    p.add_argument(
        "--chapter-seconds",
        type=float,
        default=12.0,
        help="seconds each chapter streams; its state must show within them (default 12)",
    )
    p.add_argument(
        "--every", type=float, default=0.5, help="seconds between streamed frames (default 0.5)"
    )
    p.add_argument("--phone-token", help="the user's phone token (default: minted)")
    p.add_argument(
        "--drive",
        choices=("frames", "manual"),
        default="frames",
        help="frames: only the server's analysis changes the state (default); manual: also "
        "commit each chapter's state through the demo state route (a server without analysis)",
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
        kind = args.kind or args.scenario_kind
        if kind is None:
            raise ValueError("name the scenario: companion demo scenario stress (or --scenario)")
        return await scenario(target, kind, args.minutes)
    if name == "seed-history":
        return await seed_history(target, args.profile, args.days)
    if name == "profile":
        return await set_profile(
            target, style=args.style, tone=args.tone, base_avatar=args.base_avatar
        )
    if name == "environment":
        return await environment(target, args.scenario, args.minutes)
    story = Story(target, chapter_s=args.chapter_seconds, every_s=args.every, drive=args.drive)
    return await story.play(phone_token=args.phone_token)


def _readable(result: dict[str, Any]) -> list[str]:
    """``result`` as aligned lines; a story's chapters one per line with their times."""
    lines = []
    for key, value in result.items():
        if key != "chapters":
            lines.append(f"{key:>20}: {value}")
            continue
        for c in value:
            times = "  ".join(
                f"{device} {'-' if c[f'{device}_s'] is None else format(c[f'{device}_s'], '.1f')} s"
                for device in ("watch-sim", "watch", "feed")
            )
            lines.append(
                f"{'chapter ' + str(c['number']):>20}: {c['chapter']:<9} → {c['state']:<10} {times}"
            )
    return lines


def main(args: argparse.Namespace) -> int:
    """Run one demo subcommand; print its answer; return the exit code."""
    try:
        result = asyncio.run(_dispatch(args))
    except (DemoError, TokenError, ValueError, RuntimeError) as exc:
        print(f"companion demo {args.demo_command}: {exc}", file=sys.stderr)
        return 1
    except (BrokenPipeError, ConnectionResetError) as exc:
        print(
            f"companion demo {args.demo_command}: a helper process stopped: {exc}", file=sys.stderr
        )
        return 1
    except TimeoutError:
        print(
            f"companion demo {args.demo_command}: a helper did not start in time", file=sys.stderr
        )
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
        for line in _readable(result):
            print(line, flush=True)
    if not result.get("ok", True):
        print(f"companion demo {args.demo_command}: {result.get('reason')}", file=sys.stderr)
        return 1
    return 0
