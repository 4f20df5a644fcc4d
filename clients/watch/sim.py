"""``companion watch-sim``: a simulated watch that the phone bridge pairs with over TCP.

    companion watch-sim --port 9100 --log haptics.jsonl [--images DIR]

Stands in for a watch behind Bluetooth: it listens on a loopback port for the bridge's
newline-delimited JSON (see :mod:`clients.bridge.watchlink`), keeps the last state it was shown,
downloads the avatar image (HTTP GET) only when ``image_url`` changed, and for every change
of the state hash buzzes once: a "haptic" event appended to a JSON-lines log and a line on
stdout (``shown v=… hash=…``), which is what tests and the demo wait on. The first stdout
line says where it listens (``watch-sim listening on 127.0.0.1:PORT``), so ``--port 0``
works.

Commands (an action of the companion: a breathing session, a lighter workout…) are shown
once per id (``command id=… kind=… params=…`` on stdout, a ``command`` event in the log) and
answered like a person at the watch would: ``--answer done`` or ``dismissed`` after
``--answer-after`` seconds, or ``none`` (left unanswered, so the server expires it); a
command already past its ``expires_at`` is answered ``expired`` at once. A command sent again
(the bridge resends until answered) gets the same answer again, never a second prompt.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import httpx
import orjson

log = logging.getLogger(__name__)

ANSWERS: Final = ("done", "dismissed", "none")
"""How the simulated person answers commands (``none``: not at all)."""


class SimulatedWatch:
    """The watch's memory and behaviour: last state, last image, haptic log."""

    def __init__(
        self,
        log_path: Path | None,
        *,
        images: Path | None = None,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
        out: Callable[[str], None] = print,
        answer: str = "done",
        answer_after: float = 2.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.state: dict[str, Any] = {}
        self.image_url: str | None = None
        self.image_bytes = 0
        self.downloads = 0
        self.haptics = 0
        self._log_path = log_path
        self._images = images
        self._http = http or httpx.AsyncClient(timeout=10.0)
        self._clock = clock
        self._out = out
        self._answer = answer
        self._answer_after = answer_after
        self._sleep = sleep
        self.commands: dict[str, dict[str, Any]] = {}
        """Commands shown, by id."""
        self.answers: dict[str, str] = {}
        """The answer given to each command, by id."""
        self._answering: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        for task in self._answering:
            task.cancel()
        await self._http.aclose()

    def take_command(
        self, message: dict[str, Any], answer: Callable[[dict[str, Any]], Awaitable[None]]
    ) -> None:
        """Show a command once and ``answer`` it (now if expired or answered before, else
        after the person's delay; never with ``--answer none``)."""
        command_id = message.get("id")
        if not isinstance(command_id, str):
            return
        if (given := self.answers.get(command_id)) is not None:
            self._later(answer, command_id, given, 0.0)
            return
        if command_id in self.commands:
            return  # shown already; its answer is coming
        self.commands[command_id] = message
        self._log_event({"t": int(self._clock() * 1000), "event": "command", **message})
        self._out(
            f"command id={command_id} kind={message.get('kind')} "
            f"params={orjson.dumps(message.get('params', {})).decode()}"
        )
        expires_at = message.get("expires_at")
        if isinstance(expires_at, int | float) and expires_at < self._clock() * 1000:
            self._later(answer, command_id, "expired", 0.0)
        elif self._answer != "none":
            self._later(answer, command_id, self._answer, self._answer_after)

    def _later(
        self,
        answer: Callable[[dict[str, Any]], Awaitable[None]],
        command_id: str,
        outcome: str,
        delay: float,
    ) -> None:
        async def reply() -> None:
            if delay > 0:
                await self._sleep(delay)
            self.answers[command_id] = outcome
            self._out(f"answered id={command_id} outcome={outcome}")
            await answer({"op": "command_result", "id": command_id, "outcome": outcome})

        task = asyncio.ensure_future(reply())
        self._answering.add(task)
        task.add_done_callback(self._answering.discard)

    def _log_event(self, event: dict[str, Any]) -> None:
        if self._log_path is not None:
            with self._log_path.open("ab") as file:
                file.write(orjson.dumps(event) + b"\n")

    async def show(self, message: dict[str, Any]) -> dict[str, Any]:
        """Take a state from the bridge; buzz if it differs; return the ``shown`` reply."""
        version = message.get("version")
        current = self.state.get("version")
        stale = isinstance(version, int) and isinstance(current, int) and version < current
        changed = not stale and message.get("state_hash") != self.state.get("state_hash")
        if changed:
            self.state = {k: v for k, v in message.items() if k != "op"}
            await self._refresh_image(message.get("image_url"))
            self._buzz()
        return {
            "op": "shown",
            "version": self.state.get("version"),
            "state_hash": self.state.get("state_hash"),
            "haptic": changed,
        }

    async def _refresh_image(self, url: object) -> None:
        if url == self.image_url:
            return  # same picture: a watch on a battery does not fetch it again
        self.image_url = url if isinstance(url, str) else None
        self.image_bytes = 0
        if self.image_url is None:
            return
        try:
            response = await self._http.get(self.image_url)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            log.warning("image %s not downloaded: %s", self.image_url, exc)
            self.image_url = None  # try again with the next state that names it
            return
        self.downloads += 1
        self.image_bytes = len(response.content)
        if self._images is not None:
            self._images.mkdir(parents=True, exist_ok=True)
            name = hashlib.sha256(self.image_url.encode()).hexdigest()[:16]
            (self._images / name).write_bytes(response.content)

    def _buzz(self) -> None:
        now_ms = int(self._clock() * 1000)
        self.haptics += 1
        updated_at = self.state.get("updated_at")
        event = {
            "t": now_ms,
            "event": "haptic",
            "version": self.state.get("version"),
            "state_hash": self.state.get("state_hash"),
            "state": self.state.get("state"),
            "mood": self.state.get("mood"),
            "energy": self.state.get("energy"),
            "image_url": self.image_url,
            "image_bytes": self.image_bytes,
            "latency_ms": _latency(now_ms, updated_at),
        }
        self._log_event(event)
        self._out(
            f"shown v={event['version']} hash={event['state_hash']} state={event['state']} "
            f"mood={event['mood']} image_bytes={self.image_bytes}"
        )

    async def serve_link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one bridge connection until it hangs up."""

        async def answer(result: dict[str, Any]) -> None:
            if writer.is_closing():
                return  # the bridge resends the command after reconnecting; answered then
            writer.write(orjson.dumps(result) + b"\n")
            try:
                await writer.drain()
            except ConnectionError:
                pass

        try:
            while line := await reader.readline():
                try:
                    message = orjson.loads(line)
                except orjson.JSONDecodeError:
                    log.warning("ignored a line that is not JSON")
                    continue
                if isinstance(message, dict) and message.get("op") == "state":
                    reply = await self.show(message)
                    writer.write(orjson.dumps(reply) + b"\n")
                    await writer.drain()
                elif isinstance(message, dict) and message.get("op") == "command":
                    self.take_command(message, answer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


def _latency(now_ms: int, updated_at: object) -> int | None:
    """Milliseconds since the state's commit; ``None`` for a state never committed (version
    0 has ``updated_at`` 0, and ``now - 0`` would be the epoch, not a latency)."""
    if isinstance(updated_at, bool) or not isinstance(updated_at, int) or updated_at <= 0:
        return None
    return now_ms - updated_at


async def run(args: argparse.Namespace) -> int:
    """Listen until SIGINT/SIGTERM. Raises :class:`OSError` if the port is taken."""
    watch = SimulatedWatch(
        Path(args.log) if args.log else None,
        images=Path(args.images) if args.images else None,
        out=lambda line: print(line, flush=True),
        answer=args.answer,
        answer_after=args.answer_after,
    )
    server = await asyncio.start_server(watch.serve_link, args.host, args.port)
    host, port = server.sockets[0].getsockname()[:2]
    print(f"watch-sim listening on {host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        server.close()
        await server.wait_closed()
        await watch.close()
    print(f"watch-sim stopped after {watch.haptics} haptic events", flush=True)
    return 0


def add_parser(subparsers: Any) -> None:
    """Register ``companion watch-sim``."""
    parser = subparsers.add_parser(
        "watch-sim", help="a simulated watch for the phone bridge (loopback TCP)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (default: any free one)")
    parser.add_argument("--log", help="append haptic events here (JSON lines)")
    parser.add_argument("--images", help="save downloaded avatar images in this directory")
    parser.add_argument(
        "--answer", choices=ANSWERS, default="done", help="how commands are answered"
    )
    parser.add_argument(
        "--answer-after", type=float, default=2.0, help="seconds before a command is answered"
    )
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="watch-sim %(levelname)s %(message)s")
    try:
        return asyncio.run(run(args))
    except OSError as exc:
        print(f"companion watch-sim: {exc}", file=sys.stderr)
        return 1
