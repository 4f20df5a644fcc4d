"""Helpers for the pipeline tests: a gate to hold analyses and timers, and waiting on results."""

from __future__ import annotations

import asyncio
from typing import Any

from brain.model import Frame
from server.analysis.pipeline import Analysed, Pipeline
from server.protocol import frame_to_wire
from tests.conftest import recv, send

STRESSED = {
    "state": "stressed",
    "mood": "anxious",
    "energy": 48,
    "actions": ["breathing_session"],
    "reasoning": "Your heart rate climbed to 104 bpm while you sat still. Breathe with me.",
}
"""What the fake Claude answers in the LLM pipeline tests: a stressed user."""


class Gate:
    """Awaitables that wait until the test opens them (for sleeps and analyses)."""

    def __init__(self) -> None:
        self._open = asyncio.Event()
        self.waiting = 0
        self.arrived = asyncio.Event()

    async def wait(self, *_: object) -> None:
        self.waiting += 1
        self.arrived.set()
        try:
            await self._open.wait()
        finally:
            self.waiting -= 1

    def open(self) -> None:
        self._open.set()


async def analysed_through(pipeline: Pipeline, user_id: str, ts: int, within: float = 10) -> None:
    """Wait until an analysis of ``user_id`` covered frames up to ``ts``, then for idle.

    The analysis may have finished before this is called: an analysis whose state reads are
    answered from memory can run to its end between the frames' ack and this call. So it
    counts as done, too, when nothing is scheduled or running and the user's window holds
    frames up to ``ts`` (the analysis that added or read them has run)."""
    seen = asyncio.Event()

    def listener(done: Analysed) -> None:
        if done.user_id == user_id and done.now_ms >= ts:
            seen.set()

    pipeline.listeners.append(listener)
    try:
        async with asyncio.timeout(within):
            if not covered(pipeline, user_id, ts):
                await seen.wait()
            await pipeline.idle()
    finally:
        pipeline.listeners.remove(listener)


def covered(pipeline: Pipeline, user_id: str, ts: int) -> bool:
    """Whether an analysis of ``user_id`` that covered frames up to ``ts`` has finished
    already: the user's window holds them and the scheduler has nothing left to do."""
    window = pipeline.windows.get(user_id, now_ms=int(pipeline.clock() * 1000))
    newest = None if window is None else window.latest_ts
    return newest is not None and newest >= ts and pipeline.scheduler.is_idle()


async def send_frames(ws: Any, frames: list[Frame], *, batch: int = 10, seq: int = 0) -> int:
    """Send ``frames`` in batches, each acked before the next; return the next seq."""
    for start in range(0, len(frames), batch):
        chunk = [frame_to_wire(f) for f in frames[start : start + batch]]
        await send(ws, {"op": "frames", "seq": seq, "frames": chunk})
        while True:
            reply = await recv(ws)
            if reply["op"] == "ack":
                assert reply["seq"] == seq, reply
                break
            assert reply["op"] != "error", reply
        seq += 1
    return seq
