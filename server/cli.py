"""The ``companion`` command: ``serve``, ``token``, ``tables create``, ``avatars …``,
``users tier``, and the clients' commands.

Settings errors print the setting and the reason and exit with code 2. Client programs
(bridge, watch, loadtest, demo) add their own subcommands as plugins: each declares an
entry point in the ``companion.commands`` group (``pyproject.toml``) naming a function
``add_parser(subparsers)``. The server never imports them; they talk to a server over the
network only.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import Any, Final

from brain.backoff import Backoff
from server.errors import SettingsError, StoreError
from server.settings import Settings, ensure_secret, load

COMMANDS_GROUP: Final = "companion.commands"
"""Entry-point group of the subcommands that packages add (``add_parser(subparsers)``; the
parser they add sets ``func`` like the commands here)."""

EXIT_USAGE: Final = 2
EXIT_FAILED: Final = 1
TABLES_WAIT_S: Final = 60.0
"""How long ``tables create`` waits for DynamoDB to listen (a container starting beside it)."""
TABLES_RETRY: Final = Backoff(attempts=None, base=0.5, cap=5.0)


def _settings_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="data directory (COMPANION_DATA_DIR)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="companion", description="Companion push server and its tools."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--host", help="interface (COMPANION_HOST, default 127.0.0.1)")
    serve.add_argument("--port", help="port (COMPANION_PORT, default 8000)")
    _settings_flags(serve)
    serve.set_defaults(func=_serve)

    token = sub.add_parser("token", help="print a signed device token")
    token.add_argument("user", help="user id")
    kinds = ["phone", "watch", "debug", "service", "operator"]
    token.add_argument("--device", required=True, choices=kinds, help="device kind")
    token.add_argument("--ttl", type=int, default=30 * 24 * 3600, help="seconds (default 30 days)")
    _settings_flags(token)
    token.set_defaults(func=_token)

    tables = sub.add_parser("tables", help="DynamoDB tables")
    tables_sub = tables.add_subparsers(dest="tables_command", required=True)
    create = tables_sub.add_parser("create", help="create the tables (idempotent)")
    create.add_argument(
        "--wait",
        type=float,
        default=TABLES_WAIT_S,
        help=f"seconds to wait for DynamoDB to answer (default {TABLES_WAIT_S:g})",
    )
    create.set_defaults(func=_tables_create)

    avatars = sub.add_parser("avatars", help="avatar sagas")
    avatars_sub = avatars.add_subparsers(dest="avatars_command", required=True)
    retry_failed = avatars_sub.add_parser(
        "retry-failed",
        help="drain the dead letters: re-run the saga of every user with one or whose"
        " avatar_status is failed",
    )
    retry_failed.add_argument(
        "--interrupted",
        action="store_true",
        help="also users left 'generating' by a saga that a stop interrupted (run it while"
        " no server is generating: their sagas would run twice)",
    )
    _settings_flags(retry_failed)
    retry_failed.set_defaults(func=_avatars_retry_failed)
    failed = avatars_sub.add_parser(
        "failed", help="list the dead letters: sagas that failed after their retries, and why"
    )
    _settings_flags(failed)
    failed.set_defaults(func=_avatars_failed)

    users = sub.add_parser("users", help="users' tiers")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    tier = users_sub.add_parser(
        "tier", help="show a user's tier, or set it (free, premium, or one COMPANION_TIERS adds)"
    )
    tier.add_argument("user", help="user id")
    tier.add_argument("tier", nargs="?", help="the tier to set (omit to show the current one)")
    tier.add_argument(
        "--server",
        metavar="URL",
        help="ask this running server (PUT/GET /v1/users/{id}/tier with a service token signed"
        " with the same secret); default: the configured store, in this process",
    )
    _settings_flags(tier)
    tier.set_defaults(func=_users_tier)

    for plugin in sorted(entry_points(group=COMMANDS_GROUP), key=lambda ep: ep.name):
        plugin.load()(sub)
    return parser


def _load(args: argparse.Namespace, *names: str) -> Settings:
    overrides = {name: getattr(args, name, None) for name in ("host", "port", "data_dir", *names)}
    return load(overrides=overrides)


def _serve(args: argparse.Namespace) -> int:
    from server.runner import serve

    settings = ensure_secret(_load(args))
    return serve(settings)


def _token(args: argparse.Namespace) -> int:
    from server.auth import DeviceKind, issue

    settings = ensure_secret(_load(args))
    try:
        token = issue(
            settings.secret,
            args.user,
            DeviceKind(args.device),
            ttl_s=args.ttl,
            now_s=int(time.time()),
        )
    except ValueError as exc:
        print(f"companion token: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(token)
    return 0


def _tables_create(args: argparse.Namespace) -> int:
    """Create the DynamoDB tables, waiting up to ``--wait`` seconds for DynamoDB to listen."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectionError as BotoConnectionError,
    )

    from server.parts import build_store

    settings = load()
    if settings.store != "dynamodb":
        print("companion tables create: set COMPANION_STORE=dynamodb", file=sys.stderr)
        return EXIT_USAGE

    async def create() -> list[str]:
        store: Any = build_store(settings)
        await store.open()
        try:
            created: list[str] = await store.create_tables()
            return created
        finally:
            await store.close()

    async def run() -> list[str] | None:
        """The tables created, retried while DynamoDB does not answer; ``None`` when it
        still does not after ``--wait`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(args.wait, 0.0)
        retry = 0
        while True:
            try:
                return await create()
            except (BotoConnectionError, StoreError) as exc:
                # Not listening yet (a DynamoDB container still starting): try again.
                pause = min(TABLES_RETRY.delay(retry), max(deadline - loop.time(), 0.0))
                if loop.time() >= deadline:
                    print(
                        f"companion tables create: DynamoDB did not answer within"
                        f" {args.wait:g}s ({type(exc).__name__})",
                        file=sys.stderr,
                    )
                    return None
                print(
                    f"companion tables create: DynamoDB not answering yet"
                    f" ({type(exc).__name__}); retrying in {pause:.1f}s",
                    file=sys.stderr,
                    flush=True,
                )
                await asyncio.sleep(pause)
                retry += 1

    try:
        created = asyncio.run(run())
    except (BotoCoreError, ClientError) as exc:  # refused for good: credentials, permissions
        print(f"companion tables create: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if created is None:
        return EXIT_FAILED
    for name in created:
        print(name)
    return 0


def _avatars_retry_failed(args: argparse.Namespace) -> int:
    from server.avatar.stage import describe, retry_failed_in_process

    settings = _load(args)
    try:
        outcomes = asyncio.run(retry_failed_in_process(settings, interrupted=args.interrupted))
    except ValueError as exc:  # e.g. COMPANION_AVATAR=gemini without a key
        print(f"companion avatars retry-failed: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for line in describe(outcomes):
        print(line)
    return 0 if all(o.status != "failed" for o in outcomes) else 1


def _avatars_failed(args: argparse.Namespace) -> int:
    from server.avatar.stage import dead_letters_in_process, describe_letters

    settings = _load(args)
    for line in describe_letters(asyncio.run(dead_letters_in_process(settings))):
        print(line)
    return 0


def _users_tier(args: argparse.Namespace) -> int:
    """Show or set a user's tier, through a running server or in the store; print the tier."""
    from server.protocol import valid_user_id

    settings = ensure_secret(_load(args))
    if not valid_user_id(args.user):
        print("companion users tier: not a user id", file=sys.stderr)
        return EXIT_USAGE
    if args.tier is not None and args.tier not in settings.tiers:
        known = ", ".join(settings.tiers)
        print(f"companion users tier: unknown tier (one of {known})", file=sys.stderr)
        return EXIT_USAGE
    if args.server:
        return _users_tier_on_server(settings, args.server, args.user, args.tier)
    print(asyncio.run(_users_tier_in_store(settings, args.user, args.tier)))
    return 0


def _users_tier_on_server(settings: Settings, url: str, user_id: str, tier: str | None) -> int:
    import httpx

    from server.auth import DeviceKind, issue

    token = issue(settings.secret, user_id, DeviceKind.SERVICE, ttl_s=60, now_s=int(time.time()))
    address = f"{url.rstrip('/')}/v1/users/{user_id}/tier"
    headers = {"Authorization": f"Bearer {token}"}
    try:
        with httpx.Client(timeout=10.0) as client:
            if tier is None:
                response = client.get(address, headers=headers)
            else:
                response = client.put(address, json={"tier": tier}, headers=headers)
    except httpx.HTTPError as exc:
        print(f"companion users tier: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if response.status_code != 200:
        print(f"companion users tier: {response.status_code} {response.text}", file=sys.stderr)
        return EXIT_FAILED
    print(response.json()["tier"])
    return 0


async def _users_tier_in_store(settings: Settings, user_id: str, tier: str | None) -> str:
    """The user's tier after setting it (when ``tier``) in the configured store; the
    broker tells devices on running nodes about a first version, as the server would."""
    from contextlib import AsyncExitStack
    from dataclasses import replace

    from server.metrics import Metrics
    from server.parts import build_broker, build_store
    from server.push.hub import Hub
    from server.state import StateService

    metrics = Metrics()
    async with AsyncExitStack() as stack:
        store = build_store(settings)
        await store.open()
        stack.push_async_callback(store.close)
        hub = Hub(build_broker(settings), metrics)
        await hub.start()
        stack.push_async_callback(hub.close)
        state = StateService(store, hub, metrics, time.time, tiers=settings.tiers)
        if tier is None:
            current = await state.current(user_id)
        else:
            current = await state.change_profile(user_id, lambda p: replace(p, tier=tier))
        return settings.tiers.tier_of(current.profile).name


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except SettingsError as exc:
        print(f"companion: bad setting {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
