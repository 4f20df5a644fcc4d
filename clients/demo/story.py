"""``companion demo run``: a phone bridge, two watches and a short story, against a server.

What a newcomer sees within a minute: the tool starts a simulated watch
(``companion watch-sim``), a phone bridge paired with it (``companion bridge`` reading
frames from its stdin), and a REST watch (``companion watch --mode longpoll``), all as
child processes, and subscribes itself to the user over the WebSocket, as the debug page
does. Then it plays calm → stress → exercise → recovery: for each chapter it streams that
situation's frames through the bridge as a time-lapse (:func:`brain.scenarios.timelapse`:
a minute of the situation per second, steps at their real rate, live timestamps) and waits
until each device shows the chapter's state.

**What it checks.** Every device's own output: the simulated watch's ``shown v=… state=…``
lines, the REST watch's ``state v… STATE/MOOD`` lines, and the states the WebSocket feed
carried. A chapter is shown on a device when, after the chapter began, the device showed
the chapter's state (or was already showing it); the time from the chapter's start to that
moment is the chapter's time to state. A chapter that a device did not show within the
chapter (the last one: within :data:`LAST_GRACE_S` more) fails the run: ``ok`` is false,
``reason`` says which chapter and what the device showed instead, and the exit code is 1.

**Who decides.** With ``--drive frames`` (the default) only the server's analysis changes
the state. ``--drive manual`` also commits each chapter's state through the demo state route
(``source: manual``, and the reasoning says so): for a server without the analysis stage.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from websockets.asyncio.client import connect

from brain.scenarios import timelapse
from clients.connect.access import mint
from clients.demo.target import Target
from server.protocol import frame_to_wire


@dataclasses.dataclass(frozen=True, slots=True)
class Chapter:
    """One part of the story: the frames streamed (``kind``) and the state expected."""

    name: str
    kind: str
    state: str


CHAPTERS = (
    Chapter("calm", "calm", "calm"),
    Chapter("stress", "stress", "stressed"),
    Chapter("exercise", "exercise", "exercising"),
    Chapter("recovery", "calm", "calm"),
)
MANUAL_STATES: dict[str, dict[str, Any]] = {
    "calm": {"state": "calm", "mood": "content", "energy": 70, "actions": []},
    "stressed": {
        "state": "stressed",
        "mood": "anxious",
        "energy": 45,
        "actions": ["breathing_session"],
    },
    "exercising": {
        "state": "exercising",
        "mood": "energized",
        "energy": 80,
        "actions": ["keep_going", "hydrate"],
    },
}
DEVICES = ("watch-sim", "watch", "feed")
"""The simulated watch (through the bridge), the REST long-poll watch, the WebSocket feed."""
DEVICE_NAMES = {
    "watch-sim": "the simulated watch",
    "watch": "the REST watch",
    "feed": "the WebSocket feed (what the debug page shows)",
}
START_TIMEOUT_S = 30.0
LAST_GRACE_S = 10.0
"""How long after its frames the last chapter may take to show."""
SPEED = 60.0
"""How much faster than life the story plays: one minute of a situation per second."""

_SHOWN = re.compile(r"^shown v=(\d+) hash=\S+ state=(\S+) mood=(\S+)")
_REST = re.compile(r"^state v(\d+) (\w+)/(\w+)")


@dataclasses.dataclass(frozen=True, slots=True)
class Seen:
    """A state a device showed, at ``t`` (epoch seconds, when this tool saw it)."""

    t: float
    version: int
    state: str


@dataclasses.dataclass(slots=True)
class _Child:
    name: str
    process: asyncio.subprocess.Process
    lines: asyncio.Queue[str]
    pumps: list[asyncio.Task[None]]


class Story:
    """One run of the story for ``target``'s user; :meth:`play` returns the figures."""

    def __init__(
        self,
        target: Target,
        *,
        chapter_s: float = 12.0,
        every_s: float = 0.5,
        drive: str = "frames",
        chapters: tuple[Chapter, ...] = CHAPTERS,
        out: Callable[[str], None] = lambda line: print(line, flush=True),
        clock: Callable[[], float] = time.time,
    ) -> None:
        if drive not in ("frames", "manual") or chapter_s <= 0 or every_s <= 0:
            raise ValueError("drive must be frames or manual; durations positive")
        self.target = target
        self.chapter_s = chapter_s
        self.every_s = every_s
        self.drive = drive
        self.chapters = chapters
        self._out = out
        self._clock = clock
        self.seen: dict[str, list[Seen]] = {device: [] for device in DEVICES}
        self._news = asyncio.Event()
        self._pushes = 0
        self._latencies: list[float] = []
        self._last_ts = 0

    async def play(self, *, phone_token: str | None = None) -> dict[str, Any]:
        """Run the whole story; the figures. Raises :class:`RuntimeError` if a child fails
        to start, :class:`TimeoutError` if one does not start in time."""
        phone = phone_token or await mint(self.target.user, "phone")
        chapters: list[dict[str, Any]] = []
        with tempfile.TemporaryDirectory(prefix="companion-demo-") as tmp:
            async with contextlib.AsyncExitStack() as stack:
                sim = await stack.enter_async_context(
                    self._child(
                        "watch-sim", "watch-sim", "--port", "0", "--log", f"{tmp}/haptics.jsonl"
                    )
                )
                port = await self._ready(sim, "watch-sim listening on ")
                bridge = await stack.enter_async_context(
                    self._child(
                        "bridge", "bridge", "--server", self.target.server.http,
                        "--token", phone, "--source", "stdin",
                        "--journal", f"{tmp}/bridge.journal",
                        "--linger", "0",  # a time-lapse: each frame is minutes of the story
                        "--watch-port", port.rsplit(":", 1)[1], "--exit-when-done",
                        stdin=True,
                    )
                )  # fmt: skip
                await stack.enter_async_context(
                    self._child(
                        "watch", "watch", "--server", self.target.server.http,
                        "--token", self.target.token, "--user", self.target.user,
                        "--mode", "longpoll", "--wait", "20",
                    )
                )  # fmt: skip
                observer = asyncio.create_task(self._observe())
                stack.push_async_callback(_cancel, observer)
                await self._first_sight(observer)
                for number, chapter in enumerate(self.chapters, 1):
                    self._out(f"── chapter {number}/{len(self.chapters)}: {chapter.name} ──")
                    last = number == len(self.chapters)
                    chapters.append(await self._chapter(number, chapter, bridge, last=last))
                assert bridge.process.stdin is not None
                bridge.process.stdin.close()
        return self._figures(chapters)

    def _figures(self, chapters: list[dict[str, Any]]) -> dict[str, Any]:
        missed = [
            f"chapter {c['number']} ({c['chapter']}): {DEVICE_NAMES[device]} did not show "
            f"{c['state']} within the chapter; it showed {c['showing'][device] or 'nothing'}"
            for c in chapters
            for device in DEVICES
            if c[f"{device}_s"] is None
        ]
        figures: dict[str, Any] = {
            "user_id": self.target.user,
            "ok": not missed,
            "chapters": chapters,
            "time_to_state_s": [c["watch-sim_s"] for c in chapters],
            "pushes": self._pushes,
            "watch_buzzes": len(self.seen["watch-sim"]),
            "watch_states": [s.state for s in _distinct(self.seen["watch-sim"])],
            "push_latency_ms_max": max(self._latencies) if self._latencies else None,
        }
        if missed:
            figures["reason"] = "; ".join(missed)
        return figures

    # -- children ----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _child(self, name: str, *argv: str, stdin: bool = False) -> AsyncIterator[_Child]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "server.cli",
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        lines: asyncio.Queue[str] = asyncio.Queue()
        assert process.stdout is not None and process.stderr is not None
        pumps = [
            asyncio.create_task(self._pump(name, s, lines))
            for s in (process.stdout, process.stderr)
        ]
        child = _Child(name, process, lines, pumps)
        try:
            yield child
        finally:
            if process.returncode is None:
                if name == "bridge" and process.stdin is not None:
                    process.stdin.close()  # end of input: it drains and exits on its own
                else:
                    process.terminate()
                try:
                    async with asyncio.timeout(10):
                        await process.wait()
                except TimeoutError:
                    process.kill()
                    await process.wait()
            await asyncio.gather(*pumps, return_exceptions=True)

    async def _pump(
        self, name: str, stream: asyncio.StreamReader, lines: asyncio.Queue[str]
    ) -> None:
        pattern = {"watch-sim": _SHOWN, "watch": _REST}.get(name)
        while raw := await stream.readline():
            line = raw.decode(errors="replace").rstrip()
            lines.put_nowait(line)
            self._out(f"  [{name}] {line}")
            if pattern is not None and (match := pattern.match(line)):
                self._saw(name, int(match[1]), match[2])

    async def _ready(self, child: _Child, prefix: str) -> str:
        async with asyncio.timeout(START_TIMEOUT_S):
            while not (line := await child.lines.get()).startswith(prefix):
                pass
        return line.removeprefix(prefix)

    # -- what the devices show ----------------------------------------------------------------

    def _saw(self, device: str, version: int, state: str) -> None:
        self.seen[device].append(Seen(self._clock(), version, state))
        self._news.set()

    async def _observe(self) -> None:
        """Follow the user over the WebSocket (as the debug page does): every state it shows."""
        headers = {"Authorization": f"Bearer {self.target.token}"}
        state: str | None = None
        async with connect(
            self.target.server.ws, additional_headers=headers, compression=None
        ) as ws:
            await ws.send(orjson.dumps({"op": "subscribe", "user_id": self.target.user}).decode())
            async for data in ws:
                message = orjson.loads(data)
                op = message.get("op")
                if op == "snapshot":
                    state = message.get("state")
                elif op == "delta":
                    # Latency at receipt: the delta's commit time against this clock.
                    self._latencies.append(round(self._clock() * 1000 - float(message["t"]), 1))
                    self._pushes += 1
                    state = message["changes"].get("state", state)
                    changes = message["changes"].items()
                    shown = " ".join(f"{k}={v}" for k, v in changes if k != "reasoning")
                    self._out(f"  push v{message['version']}: {shown}")
                else:
                    continue
                if isinstance(state, str):
                    self._saw("feed", int(message["version"]), state)

    async def _first_sight(self, observer: asyncio.Task[None]) -> None:
        """Wait until every device (the simulated watch, the REST watch and the feed) shows a
        first state: all connected, so a chapter never races a device still starting."""
        async with asyncio.timeout(START_TIMEOUT_S):
            while not all(self.seen[device] for device in DEVICES):
                if observer.done():
                    observer.result()  # raises why the observer stopped
                    raise RuntimeError("the WebSocket feed closed before the story began")
                self._news.clear()
                await self._news.wait()

    def _shown_since(self, device: str, state: str, since: float) -> float | None:
        """Seconds from ``since`` until ``device`` showed ``state`` (0: it already did)."""
        seen = self.seen[device]
        before = [s for s in seen if s.t < since]
        if before and before[-1].state == state:
            return 0.0
        for s in seen:
            if s.t >= since and s.state == state:
                return round(s.t - since, 2)
        return None

    # -- the chapters -----------------------------------------------------------------------------

    async def _chapter(
        self, number: int, chapter: Chapter, bridge: _Child, *, last: bool
    ) -> dict[str, Any]:
        started = self._clock()
        stream = asyncio.create_task(self._stream(chapter.kind, bridge, seed=number))
        try:
            if self.drive == "manual":
                await self._commit_manual(chapter)
            deadline = started + self.chapter_s + (LAST_GRACE_S if last else 0.0)
            while not self._all_shown(chapter.state, started):
                remaining = deadline - self._clock()
                if remaining <= 0:
                    break
                self._news.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await self._news.wait()
            await stream
        finally:
            stream.cancel()
        times = {f"{d}_s": self._shown_since(d, chapter.state, started) for d in DEVICES}
        showing = {d: self.seen[d][-1].state if self.seen[d] else None for d in DEVICES}
        on_watch = times["watch-sim_s"]
        self._out(
            f"  chapter {number} ({chapter.name}): the watch shows {chapter.state} "
            + (f"after {on_watch:.1f} s" if on_watch is not None else "— NOT SHOWN")
        )
        return {
            "number": number,
            "chapter": chapter.name,
            "state": chapter.state,
            **times,
            "showing": showing,
        }

    def _all_shown(self, state: str, since: float) -> bool:
        return all(self._shown_since(d, state, since) is not None for d in DEVICES)

    async def _stream(self, kind: str, bridge: _Child, *, seed: int) -> None:
        stdin = bridge.process.stdin
        assert stdin is not None
        count = max(1, round(self.chapter_s / self.every_s))
        frames = timelapse(
            kind, start_ms=0, count=count, every_s=self.every_s, speed=SPEED,
            device="demo-watch", seed=seed,
        )  # fmt: skip
        started = self._clock()
        for i, frame in enumerate(frames):
            # Live timestamps, strictly increasing so that every frame has its own key.
            self._last_ts = max(int(self._clock() * 1000), self._last_ts + 1)
            stdin.write(orjson.dumps(frame_to_wire(dataclasses.replace(frame, ts=self._last_ts))))
            stdin.write(b"\n")
            await stdin.drain()
            await asyncio.sleep(max(0.0, started + (i + 1) * self.every_s - self._clock()))

    async def _commit_manual(self, chapter: Chapter) -> None:
        """Commit the chapter's state through the demo state route (``--drive manual``)."""
        body = {
            **MANUAL_STATES[chapter.state],
            "reasoning": f"demo story: {chapter.name} (set by companion demo run --drive manual)",
        }
        async with self.target.client(timeout=30) as http:
            response = await http.post(f"/v1/demo/users/{self.target.user}/state", json=body)
        response.raise_for_status()
        self._out(f"  (--drive manual: committed {chapter.state} through the demo route)")


def _distinct(seen: list[Seen]) -> list[Seen]:
    """``seen`` without repeats of the same state in a row."""
    out: list[Seen] = []
    for s in seen:
        if not out or out[-1].state != s.state:
            out.append(s)
    return out


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
