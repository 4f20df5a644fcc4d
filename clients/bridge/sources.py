"""Where the phone bridge gets frames: a live scenario, a JSON-lines file, or stdin.

A source is an async iterator of chunks ``(frames, cursor)``: wire-format frame dicts (as
:func:`server.protocol.frame_to_wire` makes them) and the source position after them. The
bridge journals each chunk with its cursor in one write, so after a crash it asks the
source to resume from the last journaled cursor and nothing is read twice or skipped.
Sources that cannot rewind (stdin) ignore the cursor.

Each line a source reads is validated with the server's own codec (shape and ranges; the
server still judges timestamps against its clock); a bad line is logged and skipped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import stat
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import orjson

from brain.scenarios import KINDS, generate
from server.protocol import FrameLimits, frame_to_wire, parse_frame

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
Chunk = tuple[list[dict[str, Any]], Any]
"""Frames (wire dicts) and the cursor after them."""

_ANY_TIME = FrameLimits(max_future_ms=2**53, max_age_ms=2**53)
SCENARIO_PERIOD_MIN = 60
"""A live scenario replays this many minutes of its shape, then starts over."""


class FrameSource(Protocol):
    """Chunks of frames from ``cursor`` on (``None``: from the start)."""

    def chunks(self, cursor: Any) -> AsyncIterator[Chunk]: ...


def wire_frame(raw: object, *, now_ms: int) -> dict[str, Any]:
    """``raw`` validated and normalised to wire form (any timestamp is accepted here).

    Raises :class:`ValueError` with ``(field, reason)`` for an invalid frame.
    """
    return frame_to_wire(parse_frame(raw, now_ms=now_ms, limits=_ANY_TIME))


class ScenarioSource:
    """A synthetic scenario (:mod:`brain.scenarios`) played live: one frame every ``every_s``
    seconds of wall time, stamped with the current time, following the scenario's shape
    sample by sample (one sample is 30 s of scenario time, so the shape runs compressed).

    ``count`` frames in all (``None``: forever). Raises :class:`ValueError` for an unknown
    kind or a non-positive interval.
    """

    def __init__(
        self,
        kind: str,
        *,
        every_s: float = 1.0,
        device: str = "watch-1",
        seed: int = 0,
        count: int | None = None,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown scenario {kind!r}; expected one of {', '.join(KINDS)}")
        if every_s <= 0:
            raise ValueError(f"every_s must be positive, got {every_s}")
        self.kind = kind
        self.every_s = every_s
        self.count = count
        self._samples = generate(
            kind, start_ms=0, minutes=SCENARIO_PERIOD_MIN, device=device, seed=seed
        )
        self._clock = clock
        self._sleep = sleep

    async def chunks(self, cursor: Any) -> AsyncIterator[Chunk]:
        index = int(cursor["i"]) if isinstance(cursor, dict) else 0
        last_ts = int(cursor["ts"]) if isinstance(cursor, dict) else 0
        started = self._clock()
        ticks = 0
        while self.count is None or index < self.count:
            # Timestamps strictly increase, so each frame has its own key even on a fast tick.
            ts = max(int(self._clock() * 1000), last_ts + 1)
            sample = self._samples[index % len(self._samples)]
            frame = frame_to_wire(dataclasses.replace(sample, ts=ts))
            index, last_ts = index + 1, ts
            yield [frame], {"i": index, "ts": ts}
            ticks += 1
            await self._sleep(max(0.0, started + ticks * self.every_s - self._clock()))


class FileSource:
    """Frames from a JSON-lines file, one object per line; the cursor is a byte offset.

    ``rate`` frames per second (0: as fast as they are acked). Missing files raise
    :class:`OSError` when iteration starts.
    """

    def __init__(
        self,
        path: Path,
        *,
        rate: float = 0.0,
        chunk: int = 100,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if rate < 0 or chunk < 1:
            raise ValueError(f"rate must be >= 0 and chunk >= 1, got {rate} and {chunk}")
        self.path = path
        self.rate = rate
        self.chunk = chunk
        self.skipped = 0
        self._clock = clock
        self._sleep = sleep

    async def chunks(self, cursor: Any) -> AsyncIterator[Chunk]:
        offset = int(cursor["offset"]) if isinstance(cursor, dict) else 0
        per_chunk = self.chunk if self.rate == 0 else max(1, min(self.chunk, int(self.rate / 10)))
        started, sent = self._clock(), 0
        with self.path.open("rb") as file:
            file.seek(offset)
            done = False
            while not done:
                frames: list[dict[str, Any]] = []
                while len(frames) < per_chunk:
                    line = file.readline()
                    if not line:
                        done = True
                        break
                    offset += len(line)
                    frame = self._parse(line, offset)
                    if frame is not None:
                        frames.append(frame)
                if not frames:
                    continue
                yield frames, {"offset": offset}
                sent += len(frames)
                if self.rate:
                    await self._sleep(max(0.0, started + sent / self.rate - self._clock()))

    def _parse(self, line: bytes, offset: int) -> dict[str, Any] | None:
        if not line.strip():
            return None
        try:
            return wire_frame(orjson.loads(line), now_ms=int(self._clock() * 1000))
        except (orjson.JSONDecodeError, ValueError) as exc:
            self.skipped += 1
            log.warning("%s: skipped the line ending at byte %d: %s", self.path, offset, exc)
            return None


class StdinSource:
    """Frames from standard input, one JSON object per line, until end of input.

    A pipe cannot rewind, so the cursor is ignored: what was read before a crash is in the
    journal, what was not is lost with the pipe.
    """

    def __init__(self, *, clock: Clock = time.time) -> None:
        self.skipped = 0
        self._clock = clock

    async def chunks(self, cursor: Any) -> AsyncIterator[Chunk]:
        if stat.S_ISREG(os.fstat(sys.stdin.fileno()).st_mode):
            # ``< file.jsonl``: a regular file cannot be watched by the event loop, and
            # reading it never blocks for long, so read it directly.
            while lines := sys.stdin.buffer.readlines(1 << 16):
                frames = [f for line in lines if (f := self._parse(line)) is not None]
                if frames:
                    yield frames, None
            return
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 20)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
        )
        try:
            while line := await reader.readline():
                if (frame := self._parse(line)) is not None:
                    yield [frame], None
        finally:
            transport.close()

    def _parse(self, line: bytes) -> dict[str, Any] | None:
        if not line.strip():
            return None
        try:
            return wire_frame(orjson.loads(line), now_ms=int(self._clock() * 1000))
        except (orjson.JSONDecodeError, ValueError) as exc:
            self.skipped += 1
            log.warning("stdin: skipped a line: %s", exc)
            return None
