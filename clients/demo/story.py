"""``companion demo run``: a phone bridge, two watches and a short story, against a server.

What a newcomer sees within a minute: the tool starts a simulated watch
(``companion watch-sim``), a phone bridge paired with it (``companion bridge`` reading
frames from its stdin), and a REST watch (``companion watch --mode longpoll``), all as
child processes, and subscribes itself to the user over the WebSocket. Then it plays
calm → stress → calm → exercise: for each chapter it streams that situation's frames
through the bridge, and prints each push as the server sends it, as the REST watch gets
it and as the simulated watch buzzes.

With ``--drive auto`` (the default), a chapter that brought no state change from the
server's analysis within half its length is committed through the demo state route
(``source: manual``, and the reasoning says so), so the story also runs before the
analysis pipeline is deployed; ``frames`` never does that, ``manual`` always does.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from websockets.asyncio.client import connect

from brain.scenarios import generate
from clients.connect.access import mint
from clients.demo.target import Target
from server.protocol import frame_to_wire

CHAPTERS = ("calm", "stress", "calm", "exercise")
MANUAL_STATES: dict[str, dict[str, Any]] = {
    "calm": {"state": "calm", "mood": "content", "energy": 70, "actions": []},
    "stress": {
        "state": "stressed",
        "mood": "anxious",
        "energy": 45,
        "actions": ["breathing_session"],
    },
    "exercise": {
        "state": "exercising",
        "mood": "energized",
        "energy": 80,
        "actions": ["keep_going", "hydrate"],
    },
}
START_TIMEOUT_S = 30.0
WATCH_TIMEOUT_S = 10.0


@dataclasses.dataclass(slots=True)
class _Child:
    name: str
    process: asyncio.subprocess.Process
    lines: asyncio.Queue[str]
    pumps: list[asyncio.Task[None]]


class Story:
    """One run of the story for ``target``'s user."""

    def __init__(
        self,
        target: Target,
        *,
        chapter_s: float = 12.0,
        every_s: float = 1.0,
        drive: str = "auto",
        chapters: tuple[str, ...] = CHAPTERS,
        out: Callable[[str], None] = lambda line: print(line, flush=True),
        clock: Callable[[], float] = time.time,
    ) -> None:
        if drive not in ("auto", "frames", "manual") or chapter_s <= 0 or every_s <= 0:
            raise ValueError("drive must be auto, frames or manual; durations positive")
        self.target = target
        self.chapter_s = chapter_s
        self.every_s = every_s
        self.drive = drive
        self.chapters = chapters
        self._out = out
        self._clock = clock
        self._deltas: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.result: dict[str, Any] = {
            "user_id": target.user,
            "pushes": 0,
            "manual": 0,
            "watch_buzzes": 0,
            "push_latency_ms": [],
        }

    async def play(self, *, phone_token: str | None = None) -> dict[str, Any]:
        """Run the whole story; the figures. Raises :class:`RuntimeError` if a child fails."""
        phone = phone_token or await mint(self.target.user, "phone")
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
                        "bridge",
                        "bridge",
                        "--server",
                        self.target.server.http,
                        "--token",
                        phone,
                        "--source",
                        "stdin",
                        "--journal",
                        f"{tmp}/bridge.journal",
                        "--watch-port",
                        port.rsplit(":", 1)[1],
                        "--exit-when-done",
                        stdin=True,
                    )
                )
                await stack.enter_async_context(
                    self._child(
                        "watch",
                        "watch",
                        "--server",
                        self.target.server.http,
                        "--token",
                        self.target.token,
                        "--user",
                        self.target.user,
                        "--mode",
                        "longpoll",
                        "--wait",
                        "20",
                    )
                )
                observer = asyncio.create_task(self._observe())
                stack.push_async_callback(_cancel, observer)
                for number, kind in enumerate(self.chapters, 1):
                    if observer.done():
                        observer.result()  # raises why the observer stopped
                    self._out(f"── chapter {number}/{len(self.chapters)}: {kind} ──")
                    await self._chapter(kind, bridge, sim)
                assert bridge.process.stdin is not None
                bridge.process.stdin.close()
        latencies = self.result.pop("push_latency_ms")
        self.result["push_latency_ms_max"] = max(latencies) if latencies else None
        self.result["ok"] = self.result["pushes"] > 0
        return self.result

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
        while raw := await stream.readline():
            line = raw.decode(errors="replace").rstrip()
            lines.put_nowait(line)
            self._out(f"  [{name}] {line}")

    async def _ready(self, child: _Child, prefix: str) -> str:
        async with asyncio.timeout(START_TIMEOUT_S):
            while not (line := await child.lines.get()).startswith(prefix):
                pass
        return line.removeprefix(prefix)

    # -- the observer and the chapters ---------------------------------------------------------

    async def _observe(self) -> None:
        headers = {"Authorization": f"Bearer {self.target.token}"}
        async with connect(
            self.target.server.ws, additional_headers=headers, compression=None
        ) as ws:
            await ws.send(orjson.dumps({"op": "subscribe", "user_id": self.target.user}).decode())
            async for data in ws:
                message = orjson.loads(data)
                if message.get("op") == "delta":
                    self._deltas.put_nowait(message)

    async def _chapter(self, kind: str, bridge: _Child, sim: _Child) -> None:
        stream = asyncio.create_task(self._stream(kind, bridge))
        try:
            half = self.chapter_s / 2 if self.drive == "auto" else self.chapter_s
            delta = None if self.drive == "manual" else await self._next_delta(half)
            if delta is None and self.drive != "frames" and await self._commit_manual(kind):
                delta = await self._next_delta(WATCH_TIMEOUT_S)
            if delta is not None:
                await self._report(delta, sim)
            await stream
        finally:
            stream.cancel()

    async def _stream(self, kind: str, bridge: _Child) -> None:
        stdin = bridge.process.stdin
        assert stdin is not None
        samples = generate(kind, start_ms=0, minutes=60, device="demo-watch")
        started = self._clock()
        for i in range(max(1, int(self.chapter_s / self.every_s))):
            frame = dataclasses.replace(samples[i], ts=int(self._clock() * 1000))
            stdin.write(orjson.dumps(frame_to_wire(frame)) + b"\n")
            await stdin.drain()
            await asyncio.sleep(max(0.0, started + (i + 1) * self.every_s - self._clock()))

    async def _next_delta(self, within_s: float) -> dict[str, Any] | None:
        try:
            async with asyncio.timeout(within_s):
                return await self._deltas.get()
        except TimeoutError:
            return None

    async def _commit_manual(self, kind: str) -> bool:
        """Commit the chapter's state via the demo route; whether that changed anything."""
        body = {
            **MANUAL_STATES[kind],
            "reasoning": f"demo story: {kind} (set by companion demo "
            "run; the server's analysis did not change the state)",
        }
        async with self.target.client(timeout=30) as http:
            response = await http.post(f"/v1/demo/users/{self.target.user}/state", json=body)
        response.raise_for_status()
        committed = bool(response.json().get("committed"))
        self.result["manual"] += committed
        self._out(f"  (no change from the analysis yet: committed {kind} via the demo route)")
        return committed

    async def _report(self, delta: dict[str, Any], sim: _Child) -> None:
        latency = self._clock() * 1000 - float(delta["t"])
        self.result["pushes"] += 1
        self.result["push_latency_ms"].append(round(latency, 1))
        changes = " ".join(f"{k}={v}" for k, v in delta["changes"].items() if k != "reasoning")
        self._out(f"  push v{delta['version']}: {changes} (+{latency:.0f} ms)")
        wanted = f"shown v={delta['version']} "
        try:
            async with asyncio.timeout(WATCH_TIMEOUT_S):
                while not (await sim.lines.get()).startswith(wanted):
                    pass
            self.result["watch_buzzes"] += 1
        except TimeoutError:
            self._out(f"  the simulated watch did not show v{delta['version']} in time")


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
