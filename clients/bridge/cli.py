"""``companion bridge`` on the command line: its flags, and a :class:`~clients.bridge.bridge.Bridge`
built from them (the source, the journal under ``$XDG_STATE_HOME``, the watch link, signals:
SIGINT/SIGTERM stop, SIGUSR1 sends what is held)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from brain.scenarios import KINDS
from clients.bridge.bridge import EXIT_FAILED, Bridge
from clients.bridge.journal import Journal, JournalError
from clients.bridge.sources import FileSource, FrameSource, ScenarioSource, StdinSource
from clients.bridge.uploads import LIVE, UploadPolicy
from clients.bridge.watchlink import TcpWatchLink, WatchLink
from clients.connect.access import TokenError, add_server_flags, servers, user_of
from clients.connect.failover import RECONNECT

log = logging.getLogger("companion.bridge")


def add_parser(subparsers: Any) -> None:
    """Register ``companion bridge``."""
    parser = subparsers.add_parser("bridge", help="run a phone bridge (WebSocket, journal, watch)")
    add_server_flags(parser, token_help="a phone token", several=True)
    parser.add_argument("--source", choices=["scenario", "file", "stdin"], default="scenario")
    parser.add_argument("--scenario", choices=KINDS, default="calm", help="(--source scenario)")
    parser.add_argument("--every", type=float, default=1.0, help="seconds between scenario frames")
    parser.add_argument("--count", type=int, help="scenario frames in all (default: forever)")
    parser.add_argument("--file", help="JSON-lines file of frames (--source file)")
    parser.add_argument("--rate", type=float, default=0.0, help="file frames per second (0: max)")
    parser.add_argument(
        "--device", default="watch-1", help="the watch's device name (scenario frames, seen)"
    )
    parser.add_argument("--phone-device", default="phone", help="this phone's device name (seen)")
    parser.add_argument("--journal", help="journal file (default: per user, under ~/.local/state)")
    parser.add_argument("--watch-port", type=int, help="simulated watch (companion watch-sim)")
    parser.add_argument("--watch-host", default="127.0.0.1")
    parser.add_argument("--batch", type=int, default=100, help="frames per message (max 500)")
    parser.add_argument(
        "--linger",
        type=float,
        default=UploadPolicy().linger_s,
        help="longest a frame waits to go with the rest of its minute (s, 0: send at once;"
        " default %(default)g; SIGUSR1 sends what is held now)",
    )
    parser.add_argument(
        "--max-backoff",
        type=float,
        default=RECONNECT.cap,
        help=f"longest pause once every server failed (s, default {RECONNECT.cap:g})",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every ack")
    parser.add_argument(
        "--exit-when-done", action="store_true", help="exit 0 once the source is drained and acked"
    )
    parser.set_defaults(func=main)


def _default_journal(user: str) -> Path:
    state_home = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state_home) / "companion" / f"bridge-{user}.journal"


def _source(args: argparse.Namespace) -> FrameSource:
    if args.source == "file":
        if not args.file:
            raise ValueError("--source file needs --file PATH")
        return FileSource(Path(args.file), rate=args.rate)
    if args.source == "stdin":
        return StdinSource()
    return ScenarioSource(args.scenario, every_s=args.every, device=args.device, count=args.count)


def main(args: argparse.Namespace) -> int:
    """Run the bridge from parsed arguments; return the exit code."""
    logging.basicConfig(
        level=logging.INFO, format="bridge %(levelname)s %(message)s", stream=sys.stderr
    )
    log.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        if not args.token:
            raise ValueError("--token is required: companion token USER --device phone")
        if args.linger < 0:
            raise ValueError(f"--linger must be >= 0 seconds, got {args.linger:g}")
        server = servers(args.server)
        source = _source(args)
        journal_path = Path(args.journal) if args.journal else _default_journal(user_of(args.token))
    except (ValueError, TokenError) as exc:
        print(f"companion bridge: {exc}", file=sys.stderr)
        return 2
    journal = Journal(journal_path)
    try:
        journal.open()
    except JournalError as exc:
        print(f"companion bridge: {exc}", file=sys.stderr)
        return EXIT_FAILED
    log.info("journal %s: %d frames pending", journal_path, len(journal))
    link: WatchLink | None = None
    if args.watch_port is not None:
        link = TcpWatchLink(args.watch_host, args.watch_port)
    bridge = Bridge(
        server,
        args.token,
        source,
        journal,
        link=link,
        state_path=journal_path.with_name(journal_path.name + ".state.json"),
        batch_size=args.batch,
        uploads=UploadPolicy(linger_s=args.linger) if args.linger > 0 else LIVE,
        exit_when_done=args.exit_when_done,
        backoff=replace(RECONNECT, cap=max(args.max_backoff, RECONNECT.base)),
        phone_device=args.phone_device,
        watch_device=args.device,
    )

    async def run() -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, bridge.stop)
        # What a phone app does when it goes to the background: send what it holds.
        loop.add_signal_handler(signal.SIGUSR1, bridge.flush)
        return await bridge.run()

    try:
        return asyncio.run(run())
    finally:
        journal.close()
