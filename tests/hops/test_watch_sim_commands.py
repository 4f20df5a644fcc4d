"""The simulated watch's commands: shown once per id, answered as told, expired at once."""

from __future__ import annotations

import asyncio
from typing import Any

from clients.watch.sim import SimulatedWatch

NOW_S = 1_800_000_000.0


async def answers_of(
    watch: SimulatedWatch, messages: list[dict[str, Any]], count: int
) -> list[dict[str, Any]]:
    """Hand ``messages`` to the watch; the first ``count`` answers it gives."""
    answers: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for message in messages:
        watch.take_command(message, lambda result: _put(answers, result))
    async with asyncio.timeout(5):
        return [await answers.get() for _ in range(count)]


async def _put(queue: asyncio.Queue[dict[str, Any]], result: dict[str, Any]) -> None:
    queue.put_nowait(result)


def command(command_id: str, expires_in_s: float) -> dict[str, Any]:
    return {"op": "command", "id": command_id, "kind": "rest", "params": {"minutes": 20},
            "expires_at": int((NOW_S + expires_in_s) * 1000)}  # fmt: skip


async def test_a_command_is_shown_once_and_a_resent_one_gets_the_same_answer() -> None:
    lines: list[str] = []
    watch = SimulatedWatch(None, clock=lambda: NOW_S, out=lines.append, answer="dismissed",
                           answer_after=0.0)  # fmt: skip
    try:
        (first,) = await answers_of(watch, [command("c1", 60)], 1)
        (again,) = await answers_of(watch, [command("c1", 60)], 1)
    finally:
        await watch.close()
    assert first == again == {"op": "command_result", "id": "c1", "outcome": "dismissed"}
    assert [line.split()[0] for line in lines] == ["command", "answered", "answered"]
    assert lines[0] == 'command id=c1 kind=rest params={"minutes":20}'


async def test_an_expired_command_is_answered_expired_at_once() -> None:
    watch = SimulatedWatch(None, clock=lambda: NOW_S, out=lambda line: None, answer="done",
                           answer_after=3600.0)  # fmt: skip
    try:
        (answer,) = await answers_of(watch, [command("c2", -1)], 1)
    finally:
        await watch.close()
    assert answer["outcome"] == "expired"


async def test_with_answer_none_a_command_stays_unanswered() -> None:
    watch = SimulatedWatch(
        None, clock=lambda: NOW_S, out=lambda line: None, answer="none", answer_after=0.0
    )
    try:
        (answer,) = await answers_of(watch, [command("c3", 60), command("c4", -1)], 1)
    finally:
        await watch.close()
    assert answer["id"] == "c4"  # the expired one; c3 is left to the person (and the server)
    assert watch.answers == {"c4": "expired"}
    assert set(watch.commands) == {"c3", "c4"}
