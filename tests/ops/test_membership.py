"""Cluster membership on a real redis-server: heartbeats, expiry, leaving, a Redis restart."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from server.ops.membership import (
    LocalMembership,
    Member,
    RedisMembership,
    build_membership,
)
from server.ops.node import NodeRecord
from server.ops.stage import OPS, OpsNode
from server.settings import Settings
from tests.conftest import start_server
from tests.services import free_port, missing

pytestmark = pytest.mark.redis


def node(node_id: str, seen_at: float | None = None) -> NodeRecord:
    now = time.time() if seen_at is None else seen_at
    return NodeRecord(node_id, f"{node_id}:8000", "1.0", now - 5, now, connections={"phone": 1})


async def until(condition: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    """Poll ``condition`` until it holds; fail the test after ``within`` seconds."""
    async with asyncio.timeout(within):
        while True:
            if await condition():
                return
            await asyncio.sleep(0.05)  # poll interval of a deadline loop


def by_id(members: list[Member]) -> dict[str, bool]:
    return {m.record.node_id: m.up for m in members}


@pytest.fixture
def key_space(redis_server: str) -> str:
    """The session's redis-server, emptied of membership keys other tests left."""
    import redis

    client = redis.Redis.from_url(redis_server)
    for key in client.scan_iter("companion:node*"):
        client.delete(key)
    client.close()
    return redis_server


async def test_two_nodes_see_each_other_and_a_silent_one_goes_down(key_space: str) -> None:
    a = RedisMembership(key_space, ttl_s=0.5)
    b = RedisMembership(key_space, ttl_s=0.5)
    try:
        await a.beat(node("a"))
        await b.beat(node("b"))
        assert by_id(await a.members()) == {"a": True, "b": True}
        assert by_id(await b.members()) == {"a": True, "b": True}

        async def b_is_down() -> bool:
            await a.beat(node("a"))  # a keeps beating; b stopped (a SIGKILL looks like this)
            return by_id(await a.members()) == {"a": True, "b": False}

        await until(b_is_down, within=5)
        down = next(m for m in await a.members() if not m.up)
        assert down.record.name == "b:8000"  # shown with its last record

        await b.beat(node("b"))  # it comes back
        assert by_id(await a.members()) == {"a": True, "b": True}
        await b.leave("b")  # a clean stop: gone at once, not "down"
        assert by_id(await a.members()) == {"a": True}
    finally:
        await a.close()
        await b.close()


async def test_a_node_down_for_long_is_forgotten(key_space: str) -> None:
    membership = RedisMembership(key_space, ttl_s=0.2, forget_after_s=60)
    try:
        await membership.beat(node("old", seen_at=time.time() - 120))
        await membership.beat(node("new"))  # each beat forgets nodes silent for a minute
        assert by_id(await membership.members()) == {"new": True}
    finally:
        await membership.close()


async def test_a_damaged_record_is_skipped(key_space: str) -> None:
    membership = RedisMembership(key_space)
    raw = aioredis.Redis.from_url(key_space)
    try:
        await membership.beat(node("good"))
        await raw.zadd("companion:nodes:seen", {"bad": time.time() * 1000})
        await raw.hset("companion:nodes:last", "bad", b"{not json")
        assert by_id(await membership.members()) == {"good": True}
    finally:
        await raw.aclose()
        await membership.close()


def test_the_membership_follows_the_broker_setting() -> None:
    assert isinstance(build_membership("memory"), LocalMembership)
    assert isinstance(build_membership("redis://127.0.0.1:1/0"), RedisMembership)


@pytest.fixture
async def restartable_redis(tmp_path: Path) -> AsyncIterator[Callable[[], Awaitable[object]]]:
    """A redis-server of this test's own on a fixed port; the test may stop and restart it.

    Yields ``restart()``; the server's URL is ``restart.url``.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        missing("redis-server is not installed (Debian package redis-server)")
    assert binary is not None
    port = free_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    command += ["--appendonly", "no", "--dir", str(tmp_path)]
    processes: list[asyncio.subprocess.Process] = []

    async def start() -> None:
        processes.append(
            await asyncio.create_subprocess_exec(
                *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
            )
        )
        client = aioredis.Redis(port=port, socket_connect_timeout=0.5)
        try:
            async with asyncio.timeout(20):
                while True:
                    try:
                        if await client.ping():
                            return
                    except (OSError, RedisError):  # not listening yet
                        await asyncio.sleep(0.05)  # poll interval of a deadline loop
        finally:
            await client.aclose()

    async def stop() -> None:
        for process in processes:
            if process.returncode is None:
                process.terminate()
                async with asyncio.timeout(10):
                    await process.wait()

    await start()
    restart = start
    restart.url = f"redis://127.0.0.1:{port}/0"  # type: ignore[attr-defined]
    restart.stop = stop  # type: ignore[attr-defined]
    try:
        yield restart
    finally:
        await stop()


async def test_a_node_rides_out_a_redis_restart(
    restartable_redis: Callable[[], Awaitable[object]], settings: Settings
) -> None:
    url: str = restartable_redis.url  # type: ignore[attr-defined]
    async with start_server(replace(settings, broker=url)) as live:
        ops: OpsNode = live.services.parts[OPS]
        metrics = live.services.metrics

        async def membership_ok(expected: bool) -> bool:
            return bool(ops.view.get("membership_ok")) is expected

        await until(lambda: membership_ok(True))
        await restartable_redis.stop()  # type: ignore[attr-defined]
        await until(lambda: membership_ok(False))
        assert [n["name"] for n in ops.view["nodes"]] == [ops.name]  # this node alone, up
        assert metrics.cluster_heartbeats.labels("error")._value.get() >= 1

        await restartable_redis()
        await until(lambda: membership_ok(True), within=20)  # the pool reconnects by itself
        assert [n["up"] for n in ops.view["nodes"]] == [True]
        rendered = metrics.render().decode()
        assert 'companion_cluster_nodes{state="up"} 1.0' in rendered
