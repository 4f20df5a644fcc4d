"""``companion watch``: a watch that cannot hold a socket, on the REST path, with a meter.

    companion watch --server http://127.0.0.1:8765 --token "$WATCH_TOKEN" \\
        --mode longpoll --duration 60 --json
    companion watch --server http://10.0.0.1:8000,http://10.0.0.2:8000 --token "$WATCH_TOKEN"

Three ways to learn about a new state, to compare what each costs:

- ``poll``: ``GET /v1/users/{id}/state`` every ``--interval`` seconds with ``If-None-Match``
  (a 304 when nothing changed);
- ``longpoll``: the same request with ``?wait=S&since=V``: the server holds it until the
  version moves past V or S seconds pass, and the watch asks again at once;
- ``piggyback``: every ``--interval`` the watch uploads a frame (``POST …/frames``, which
  it does anyway), reads ``version``/``state_hash`` from the answer, and GETs the state
  only when the hash changed.

Every request is metered: requests, bytes sent and received with the HTTP/1.1 request
and status lines and headers as they went over the wire (TCP/IP overhead not included),
and the change-to-watch latency (receipt time minus the state's ``updated_at``). The
figures print at the end (``--json`` for machines); each change prints as it arrives.

A failed request follows the one reconnect rule (:mod:`clients.connect.failover`): the
watch moves on to the next of its server URLs after a short jittered pause (503 and 429
mean "come back soon, elsewhere"); the backoff grows only once every URL has failed, up to
5 s; 401 and 403 stop it (the token is refused).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import random
import signal
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal

import httpx

from brain.backoff import Backoff
from brain.scenarios import generate
from clients.connect.access import Endpoints, TokenError, add_server_flags, servers, user_of
from clients.connect.failover import RECONNECT, Failover
from server.protocol import Reconnect, frame_to_wire, reconnect_after_refusal, retry_after_s

Mode = Literal["poll", "longpoll", "piggyback"]
MODES: tuple[Mode, ...] = ("poll", "longpoll", "piggyback")
DEFAULT_WAIT_S = 55.0
"""Long-poll hold: under the 60 s the server allows, and under common proxy idle timeouts."""

OnChange = Callable[[dict[str, Any], float], None]
"""Called with (new state, latency in ms) for every change the watch sees."""


@dataclasses.dataclass(slots=True)
class WatchStats:
    """What a run cost and how fast changes arrived."""

    mode: str
    seconds: float = 0.0
    requests: int = 0
    not_modified: int = 0
    errors: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    changes: int = 0
    latencies_ms: list[float] = dataclasses.field(default_factory=list)

    def per_hour(self, value: float) -> float:
        return value * 3600 / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)
        return {
            "mode": self.mode,
            "seconds": round(self.seconds, 3),
            "requests": self.requests,
            "not_modified": self.not_modified,
            "errors": self.errors,
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "requests_per_hour": round(self.per_hour(self.requests), 1),
            "bytes_per_hour": round(self.per_hour(self.bytes_sent + self.bytes_received)),
            "changes": self.changes,
            "latency_ms_p50": round(statistics.median(lat), 1) if lat else None,
            "latency_ms_max": round(lat[-1], 1) if lat else None,
        }


def request_bytes(request: httpx.Request) -> int:
    """Bytes of ``request`` on the wire: request line, headers, blank line, body."""
    line = f"{request.method} {request.url.raw_path.decode()} HTTP/1.1\r\n"
    headers = sum(len(k) + len(v) + 4 for k, v in request.headers.raw)
    return len(line) + headers + 2 + len(request.content)


def response_bytes(response: httpx.Response) -> int:
    """Bytes of a read ``response`` on the wire: status line, headers, blank line, body."""
    reason = response.reason_phrase or ""
    line = f"HTTP/1.1 {response.status_code} {reason}\r\n"
    headers = sum(len(k) + len(v) + 4 for k, v in response.headers.raw)
    return len(line) + headers + 2 + response.num_bytes_downloaded


class RestWatch:
    """One watch of ``user`` on ``server`` (one node or several to fail over between) in
    ``mode``; :meth:`run` until a deadline."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        server: Endpoints | Sequence[Endpoints],
        user: str,
        *,
        mode: Mode,
        interval: float = 60.0,
        wait: float = DEFAULT_WAIT_S,
        on_change: OnChange | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
        backoff: Backoff = RECONNECT,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if interval <= 0 or not 0 < wait <= 60:
            raise ValueError(f"need interval > 0 and 0 < wait <= 60, got {interval}, {wait}")
        self.http = http
        self.user = user
        self.mode = mode
        self.interval = interval
        self.wait = wait
        self.state: dict[str, Any] | None = None
        self.stats = WatchStats(mode)
        self.synced = asyncio.Event()
        """Set once the first state is known (what later changes are measured against)."""
        nodes = (server,) if isinstance(server, Endpoints) else tuple(server)
        self.failover = Failover(
            nodes, backoff=dataclasses.replace(backoff, random=rand), start=int(rand() * len(nodes))
        )
        self._on_change = on_change
        self._clock = clock
        self._sleep = sleep
        self._frames = generate("calm", start_ms=0, minutes=60, device="watch-rest")
        self._uploaded = 0
        self._deadline: float | None = None

    async def run(self, duration: float | None = None) -> WatchStats:
        """Watch for ``duration`` seconds (``None``: until cancelled); return the figures.

        Raises :class:`httpx.HTTPStatusError` for 401/403 (the token is refused).
        """
        started = self._clock()
        deadline = None if duration is None else started + duration
        self._deadline = deadline
        step = {"poll": self.poll_once, "longpoll": self.longpoll_once}.get(
            self.mode, self.piggyback_once
        )
        try:
            while deadline is None or self._clock() < deadline:
                began = self._clock()
                rule: Reconnect | None = None
                retry_after: int | None = None
                try:
                    await step()
                    self.failover.succeeded()
                except httpx.HTTPStatusError as exc:
                    rule = reconnect_after_refusal(exc.response.status_code)
                    retry_after = retry_after_s(exc.response.headers.get("Retry-After"))
                    if rule is Reconnect.STOP:
                        raise
                except httpx.TransportError:
                    rule = Reconnect.BACKOFF
                if rule is not None:
                    self.stats.errors += 1
                    retry = self.failover.failed(rule, retry_after)
                    assert retry is not None  # STOP was raised above
                    pause = retry.pause
                elif self.mode == "longpoll":
                    continue
                else:
                    pause = began + self.interval - self._clock()
                if deadline is not None:
                    pause = min(pause, deadline - self._clock())
                await self._sleep(max(0.0, pause))
        finally:
            self.stats.seconds = self._clock() - started
        return self.stats

    # -- one round of each mode ---------------------------------------------------------------

    async def poll_once(self) -> None:
        """One conditional GET. Raises :class:`httpx.HTTPError`."""
        await self._get_state({})

    async def longpoll_once(self) -> None:
        """One held GET (``?wait=&since=``). Raises :class:`httpx.HTTPError`."""
        wait = self.wait
        if self._deadline is not None:  # do not hold the last request past the run's end
            wait = max(0.1, min(wait, self._deadline - self._clock()))
        params: dict[str, str] = {"wait": f"{wait:.3f}"}
        if self.state is not None:
            params["since"] = str(self.state["version"])
        await self._get_state(params, limit_s=wait + 10)

    async def piggyback_once(self) -> None:
        """Upload a frame; GET the state only if the answer's hash is new.

        Raises :class:`httpx.HTTPError`.
        """
        sample = self._frames[self._uploaded % len(self._frames)]
        self._uploaded += 1
        frame = frame_to_wire(dataclasses.replace(sample, ts=int(self._clock() * 1000)))
        response = await self._send("POST", f"{self._base}/frames", json={"frames": [frame]})
        response.raise_for_status()
        answer = response.json()
        if self.state is None or answer["state_hash"] != self.state["state_hash"]:
            await self._get_state({})

    async def _get_state(self, params: dict[str, str], limit_s: float = 15.0) -> None:
        headers = {"If-None-Match": f'"{self.state["state_hash"]}"'} if self.state else {}
        response = await self._send(
            "GET", f"{self._base}/state", params=params, headers=headers, timeout=limit_s
        )
        if response.status_code == 304:
            self.stats.not_modified += 1
            return
        response.raise_for_status()
        self._take(response.json())

    async def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        response = await self.http.request(method, url, **kwargs)
        self.stats.requests += 1
        self.stats.bytes_sent += request_bytes(response.request)
        self.stats.bytes_received += response_bytes(response)
        return response

    @property
    def _base(self) -> str:
        return f"{self.failover.current.http}/v1/users/{self.user}"

    def _take(self, state: dict[str, Any]) -> None:
        previous, self.state = self.state, state
        self.synced.set()
        if previous is None or previous["state_hash"] == state["state_hash"]:
            return
        latency_ms = self._clock() * 1000 - float(state.get("updated_at") or 0)
        self.stats.changes += 1
        self.stats.latencies_ms.append(latency_ms)
        if self._on_change is not None:
            self._on_change(state, latency_ms)


# -- command line -----------------------------------------------------------------------------


def add_parser(subparsers: Any) -> None:
    """Register ``companion watch``."""
    parser = subparsers.add_parser("watch", help="a REST watch (poll, long-poll, piggyback)")
    add_server_flags(
        parser, token_help="a watch token (or a service token with --user)", several=True
    )
    parser.add_argument("--user", help="user to watch (default: the token's user)")
    parser.add_argument("--mode", choices=MODES, default="longpoll")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between polls")
    parser.add_argument("--wait", type=float, default=DEFAULT_WAIT_S, help="long-poll hold (s)")
    parser.add_argument("--duration", type=float, help="seconds to run (default: until Ctrl-C)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.set_defaults(func=main)


def _print_change(state: dict[str, Any], latency_ms: float) -> None:
    print(
        f"state v{state['version']} {state['state']}/{state['mood']} energy={state['energy']} "
        f"hash={state['state_hash']} (+{latency_ms:.0f} ms)",
        flush=True,
    )


async def _print_first(watch: RestWatch) -> None:
    """Print the state the watch shows first, once it knows it (no latency: not a change)."""
    await watch.synced.wait()
    state = watch.state
    if state is not None:
        print(
            f"state v{state['version']} {state['state']}/{state['mood']} "
            f"energy={state['energy']} hash={state['state_hash']} (first)",
            flush=True,
        )


def main(args: argparse.Namespace) -> int:
    """Run the watch from parsed arguments; return the exit code."""
    try:
        if not args.token:
            raise ValueError("--token is required: companion token USER --device watch")
        server = servers(args.server)
        user = args.user or user_of(args.token)
    except (ValueError, TokenError) as exc:
        print(f"companion watch: {exc}", file=sys.stderr)
        return 2

    async def run() -> WatchStats:
        headers = {"Authorization": f"Bearer {args.token}", "User-Agent": "companion-watch/1"}
        async with httpx.AsyncClient(headers=headers, timeout=15.0) as http:
            watch = RestWatch(
                http,
                server,
                user,
                mode=args.mode,
                interval=args.interval,
                wait=args.wait,
                on_change=_print_change,
            )
            task = asyncio.ensure_future(watch.run(args.duration))
            first = asyncio.ensure_future(_print_first(watch))
            task.add_done_callback(lambda _: first.cancel())
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, task.cancel)
            try:
                return await task
            except asyncio.CancelledError:
                return watch.stats

    try:
        stats = asyncio.run(run())
    except httpx.HTTPStatusError as exc:
        print(f"companion watch: the server refused the token: {exc}", file=sys.stderr)
        return 3
    except ValueError as exc:
        print(f"companion watch: {exc}", file=sys.stderr)
        return 2
    figures = stats.to_dict()
    if args.json:
        print(json.dumps(figures), flush=True)
    else:
        for name, value in figures.items():
            print(f"{name:>18}: {value}", flush=True)
    return 0
