"""Failures stay where they happen: a peer, a commit listener or a frames hook that raises is
logged and counted, and neither the committer nor the others notice; frames are analysed
while Redis is down."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import replace
from typing import Any

import pytest

from brain.model import Frame
from brain.scenarios import generate
from server.analysis.pipeline import PIPELINE, Pipeline, pipeline_stage
from server.protocol import Delta
from server.push.hub import FollowUp
from server.services import Services
from server.settings import Settings
from server.store.base import UserState
from tests.broker.conftest import RedisProcess, eventually, quick_broker
from tests.conftest import LiveServer, auth, recv_op, start_server
from tests.pipeline.helpers import analysed_through, send_frames


class BrokenPeer:
    """A subscriber whose ``offer`` raises, as a peer with a bug would."""

    wants_summaries = False

    def __init__(self) -> None:
        self.offers = 0

    def offer(self, text: str, frame: bytes) -> None:
        self.offers += 1
        raise RuntimeError("peer bug")

    def offer_delta(
        self, delta: Delta, text: str, frame: bytes, follow: FollowUp | None, now: float
    ) -> None:
        self.offers += 1
        raise RuntimeError("peer bug")


async def commit(live: LiveServer, user: str, **changes: Any) -> dict[str, Any]:
    async with live.http() as http:
        answer = await http.post(
            f"/v1/demo/users/{user}/state", json=changes, headers=auth(user, "service")
        )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def test_a_raising_peer_is_dropped_and_counted_and_the_others_still_get_the_delta(
    live_server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    hub = live_server.services.hub
    first = await live_server.connect("alice")
    broken = BrokenPeer()
    await hub.join("alice", broken)
    second = await live_server.connect("alice", "watch")
    answer = await commit(live_server, "alice", state="stressed")  # no error for the committer
    for ws in (first, second):
        assert (await recv_op(ws, "delta"))["version"] == answer["version"]
    assert broken.offers == 1
    assert broken not in hub.peers("alice") and len(hub.peers("alice")) == 2
    assert live_server.app.state.metrics.peer_failures._value.get() == 1
    assert any("dropping a peer of alice" in r.getMessage() for r in caplog.records)
    answer = await commit(live_server, "alice", state="calm")
    assert (await recv_op(first, "delta"))["version"] == answer["version"]
    assert broken.offers == 1  # dropped: offered nothing more
    await hub.leave("alice", broken)  # the peer's own leave is harmless after the drop
    await first.close()
    await second.close()


async def test_a_raising_commit_listener_fails_neither_the_commit_nor_the_next_listener(
    settings: Settings,
) -> None:
    heard: list[int] = []

    async def raising(previous: UserState, committed: UserState, cause: str) -> None:
        raise RuntimeError("listener bug")

    async def recording(previous: UserState, committed: UserState, cause: str) -> None:
        heard.append(committed.version)

    async def listeners(services: Services, stack: AsyncExitStack) -> None:
        services.state.listeners.extend([raising, recording])

    async with start_server(settings, stages=[listeners]) as live:
        phone = await live.connect("alice")
        answer = await commit(live, "alice", state="stressed")
        assert (await recv_op(phone, "delta"))["version"] == answer["version"]
        assert heard == [answer["version"]]
        assert live.app.state.metrics.listener_failures._value.get() == 1
        await phone.close()


async def test_a_raising_frames_hook_does_not_stop_the_hooks_after_it(settings: Settings) -> None:
    seen: list[str] = []

    async def raising(by_user: Mapping[str, Sequence[Frame]]) -> None:
        raise RuntimeError("hook bug")

    async def recording(by_user: Mapping[str, Sequence[Frame]]) -> None:
        seen.extend(by_user)

    async def hooks(services: Services, stack: AsyncExitStack) -> None:
        services.frames_hooks[:0] = [raising]  # before the summary publisher
        services.frames_hooks.append(recording)

    async with start_server(settings, stages=[hooks]) as live:
        debug = await live.connect("alice", "debug")
        async with live.http() as http:
            answer = await http.post(
                "/v1/users/alice/frames",
                json={"frames": [{"ts": int(time.time() * 1000), "hr": 70}]},
                headers=auth("alice", "watch"),
            )
        assert answer.status_code == 200, answer.text
        await eventually(lambda: seen == ["alice"])
        assert (await recv_op(debug, "frames"))["user_id"] == "alice"  # the summary hook ran
        name = "test_a_raising_frames_hook_does_not_stop_the_hooks_after_it.<locals>.raising"
        assert live.app.state.metrics.hook_failures.labels(name)._value.get() == 1
        await debug.close()


async def test_frames_are_analysed_while_redis_is_down(
    settings: Settings, redis_process: RedisProcess
) -> None:
    broker = quick_broker(redis_process.url)
    fast = replace(settings, debounce_ms=1)
    start = int(time.time() * 1000) - 20 * 60_000
    frames = generate("stress", start_ms=start, minutes=15)
    async with start_server(fast, broker=broker, stages=[pipeline_stage]) as live:
        pipeline: Pipeline = live.services.parts[PIPELINE]
        await redis_process.stop()
        await eventually(lambda: not broker.health().connected)
        phone = await live.connect("ann")
        await send_frames(phone, frames)
        await analysed_through(pipeline, "ann", frames[-1].ts)
        state = await live.services.state.current("ann")
        assert state.state == "stressed"  # analysed and committed, publish or not
        assert live.app.state.metrics.publish_failures.labels("summary")._value.get() >= 1
        await phone.close()
