"""One owner per user in the cluster: Redis leases, notices to the owner, takeover, erase.

Real redis-server (one per session; every test uses user ids of its own). Two servers in one
test are two nodes: their own Redis connections, one SQLite file between them (the shared
store), as two processes on one machine would be.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from brain.backoff import Backoff
from brain.scenarios import generate
from server.analysis.owners import FENCE, OWNER, RedisOwners
from server.analysis.pipeline import Analysed, Pipeline, pipeline_of, pipeline_stage
from server.protocol import frame_to_wire
from server.settings import Settings
from tests.conftest import LiveServer, auth, start_server
from tests.services import _redis_answers, free_port, redis_server  # noqa: F401  (fixture)

pytestmark = pytest.mark.redis

LEASE_MS = 600


def user() -> str:
    return f"u-{uuid.uuid4().hex[:10]}"


class Heard:
    """What a node's owners told it: notices, releases and erases, each with an event."""

    def __init__(self, owners: RedisOwners) -> None:
        self.notices: list[tuple[str, int | None]] = []
        self.erased: list[str] = []
        self.released: list[str] = []
        self.changed = asyncio.Event()
        owners.on_notice = lambda u, since: self._add(self.notices, (u, since))
        owners.on_erase = lambda u: self._add(self.erased, u)
        owners.on_release = lambda u: self._add(self.released, u)

    def _add(self, into: list[object], item: object) -> None:  # type: ignore[type-arg]
        into.append(item)
        self.changed.set()

    async def until(self, condition: Callable[[], bool], within: float = 5.0) -> None:
        async with asyncio.timeout(within):
            while not condition():
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def nodes(redis_server: str) -> AsyncIterator[tuple[RedisOwners, RedisOwners]]:  # noqa: F811
    async with AsyncExitStack() as stack:
        pair = []
        for _ in range(2):
            owners = RedisOwners(redis_server, lease_ms=LEASE_MS)
            await owners.start()
            stack.push_async_callback(owners.close)
            pair.append(owners)
        yield pair[0], pair[1]


async def test_the_first_node_with_frames_owns_the_user_and_the_other_notifies_it(
    nodes: tuple[RedisOwners, RedisOwners],
) -> None:
    a, b = nodes
    heard_a, heard_b = Heard(a), Heard(b)
    u = user()

    await a.route(u, 1000)
    await b.route(u, 2000)
    await heard_a.until(lambda: len(heard_a.notices) == 2)

    assert heard_a.notices == [(u, 1000), (u, 2000)]
    assert heard_b.notices == []  # a non-owner never analyses
    assert a.held() == [u] and b.held() == []
    assert await a.lease_of(u) is not None and await b.lease_of(u) is None


async def test_a_lease_given_back_goes_to_the_next_node_with_a_higher_fence(
    redis_server: str,  # noqa: F811
) -> None:
    u = user()
    first = RedisOwners(redis_server, lease_ms=LEASE_MS)
    await first.start()
    await first.route(u, None)
    old = await first.lease_of(u)
    await first.close()  # gives the lease back
    second = RedisOwners(redis_server, lease_ms=LEASE_MS)
    heard = Heard(second)
    await second.start()
    try:
        await second.route(u, 5)
        new = await second.lease_of(u)
    finally:
        await second.close()

    assert old is not None and new is not None
    assert new.fence == old.fence + 1
    assert heard.notices == [(u, 5)]


async def test_a_dead_owners_user_moves_to_a_node_that_has_frames_for_it(
    redis_server: str,  # noqa: F811
    nodes: tuple[RedisOwners, RedisOwners],
) -> None:
    """A lease held by a node that no longer listens: the notice reaches nobody, and once
    the lease runs out the sender takes the user over (and reads the whole window)."""
    _, b = nodes
    heard = Heard(b)
    u = user()
    client = aioredis.Redis.from_url(redis_server)
    await client.set(OWNER + u, "dead-node:1", px=LEASE_MS)
    await client.set(FENCE + u, 1)
    await client.aclose()
    started = time.monotonic()

    await b.route(u, 1234)
    assert heard.notices == []
    await heard.until(lambda: heard.notices == [(u, None)], within=5 * LEASE_MS / 1000)

    assert time.monotonic() - started < 3 * LEASE_MS / 1000
    lease = await b.lease_of(u)
    assert lease is not None and lease.fence == 2


async def test_an_idle_user_is_given_back_and_dropped(
    nodes: tuple[RedisOwners, RedisOwners],
) -> None:
    a, _ = nodes
    heard = Heard(a)
    u = user()
    await a.route(u, None)

    await heard.until(lambda: heard.released == [u], within=5 * LEASE_MS / 1000)

    assert a.held() == []


async def test_an_erase_is_heard_by_every_node_and_the_owner_keeps_the_user(
    nodes: tuple[RedisOwners, RedisOwners],
) -> None:
    a, b = nodes
    heard_a, heard_b = Heard(a), Heard(b)
    u = user()
    await b.route(u, None)

    await a.announce_erase(u)
    await heard_a.until(lambda: heard_a.erased == [u])
    await heard_b.until(lambda: heard_b.erased == [u])
    await a.route(u, 7)  # frames after the erase still reach the owner
    await heard_b.until(lambda: (u, 7) in heard_b.notices)

    assert b.held() == [u] and heard_a.notices == []


async def test_a_notice_that_finds_the_lease_given_back_is_routed_again(
    redis_server: str,  # noqa: F811
    nodes: tuple[RedisOwners, RedisOwners],
) -> None:
    """The sender looked up the owner just before the owner gave the lease back."""
    a, _ = nodes
    heard = Heard(a)
    u = user()
    await a.route(u, None)
    await heard.until(lambda: heard.released == [u], within=5 * LEASE_MS / 1000)
    client = aioredis.Redis.from_url(redis_server)
    try:
        await client.publish(a.channel, f"{u}\n42")
    finally:
        await client.aclose()

    await heard.until(lambda: heard.notices[-1:] == [(u, 42)])

    assert a.held() == [u]


# --- two servers, one store ---------------------------------------------------------------


@pytest.fixture
def cluster_settings(settings: Settings, redis_server: str) -> Settings:  # noqa: F811
    return replace(settings, broker=redis_server, debounce_ms=50, owner_lease_ms=2000)


async def post(live: LiveServer, user_id: str, frames: list[object]) -> None:
    async with live.http() as http:
        answer = await http.post(
            f"/v1/users/{user_id}/frames",
            json={"frames": [frame_to_wire(f) for f in frames]},  # type: ignore[arg-type]
            headers=auth(user_id, "watch"),
        )
    assert answer.status_code == 200, answer.text


async def test_frames_through_two_nodes_are_analysed_by_one_that_sees_them_all(
    cluster_settings: Settings,
) -> None:
    u = user()
    now = int(time.time() * 1000)
    watch = generate("stress", start_ms=now - 6 * 60_000, minutes=6, device="watch")
    ring = generate("calm", start_ms=now - 6 * 60_000, minutes=6, device="ring")
    async with (
        start_server(cluster_settings, stages=[pipeline_stage]) as one,
        start_server(cluster_settings, stages=[pipeline_stage]) as two,
    ):
        pipelines = [pipeline_of(one.services), pipeline_of(two.services)]
        analysed: list[list[Analysed]] = [[], []]
        total = len(watch) + len(ring)
        saw_all = asyncio.Event()

        def recorder(seen: list[Analysed]) -> Callable[[Analysed], None]:
            def record(done: Analysed) -> None:
                seen.append(done)
                if done.frames == total:
                    saw_all.set()

            return record

        for pipeline, seen in zip(pipelines, analysed, strict=True):
            assert isinstance(pipeline, Pipeline)
            pipeline.listeners.append(recorder(seen))

        for start in range(0, len(watch), 4):
            await post(one, u, watch[start : start + 4])
            await post(two, u, ring[start : start + 4])
        async with asyncio.timeout(15):
            await saw_all.wait()
        for pipeline in pipelines:
            assert pipeline is not None
            await pipeline.idle()

    busy = [i for i, seen in enumerate(analysed) if seen]
    assert len(busy) == 1, "exactly one node analysed the user"
    assert analysed[busy[0]][-1].frames == total  # the owner saw both devices' frames


# --- Redis restarts -----------------------------------------------------------------------


def start_redis(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    assert binary is not None
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(workdir)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def answering(port: int, within: float = 10.0) -> None:
    """Wait until the redis-server on ``port`` answers PING (polled under a deadline)."""
    async with asyncio.timeout(within):
        while True:
            if await asyncio.to_thread(_redis_answers, port):
                return
            await asyncio.sleep(0.05)


async def test_owners_work_again_after_redis_restarts(redis_server: str, tmp_path: Path) -> None:  # noqa: F811
    """Redis gone and back (without persistence: every lease lost): the node resubscribes,
    gives up the lease it can no longer prove, and takes users again on their next frames."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    server = start_redis(port, tmp_path)
    owners = RedisOwners(url, lease_ms=LEASE_MS, backoff=Backoff(attempts=None, cap=0.2))
    heard = Heard(owners)
    try:
        await answering(port)
        await owners.start()
        u = user()
        await owners.route(u, 1)
        server.terminate()
        server.wait(10)
        server = start_redis(port, tmp_path)
        await answering(port)

        await heard.until(lambda: u in heard.released, within=10)
        async with asyncio.timeout(10):
            while True:  # the first commands may meet connections Redis closed
                try:
                    await owners.route(u, 5)
                    break
                except RedisError:
                    await asyncio.sleep(0.05)
        await heard.until(lambda: heard.notices[-1:] == [(u, 5)])
        lease = await owners.lease_of(u)
    finally:
        await owners.close()
        server.terminate()
        server.wait(10)

    assert lease is not None and lease.fence == 1  # a new Redis: fences start again
