"""The Redis broker heals: Redis stopped, started again, paused or absent at start.

Each test runs its own redis-server and breaks it for real; the broker is never told.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import pytest

from brain.backoff import Backoff
from server.broker.redis import RedisBroker
from server.errors import BrokerUnavailable
from server.parts import build_broker
from server.settings import load
from tests.broker.conftest import RedisProcess, eventually

Received = asyncio.Queue[tuple[str, bytes]]


class Node:
    """A subscribing broker, what it received, and how often it said it reconnected."""

    def __init__(self, broker: RedisBroker) -> None:
        self.broker = broker
        self.received: Received = asyncio.Queue()
        self.reconnects = 0

    async def start(self) -> None:
        await self.broker.start(
            lambda user, payload: self.received.put_nowait((user, payload)), self._reconnected
        )

    def _reconnected(self) -> None:
        self.reconnects += 1


def quick(url: str, **options: object) -> RedisBroker:
    """A broker with short heartbeats and deadlines, so that tests see outages soon."""
    options.setdefault("heartbeat_s", 0.1)
    options.setdefault("command_timeout_s", 0.5)
    options.setdefault("backoff", Backoff(attempts=None, base=0.02, cap=0.2))
    return RedisBroker(url, **options)  # type: ignore[arg-type]


@pytest.fixture
async def node(redis_process: RedisProcess) -> AsyncIterator[Node]:
    node = Node(quick(redis_process.url))
    await node.start()
    yield node
    await node.broker.close()


@pytest.fixture
async def publisher(redis_process: RedisProcess) -> AsyncIterator[RedisBroker]:
    broker = quick(redis_process.url)
    await broker.start(lambda user, payload: None)
    yield broker
    await broker.close()


async def arrives(publisher: RedisBroker, node: Node, user: str, within: float = 10) -> None:
    """Publish a marker until ``node`` receives it (SUBSCRIBE is acknowledged asynchronously,
    and the publisher may itself still be reconnecting); then drain what came with it."""
    async with asyncio.timeout(within):
        while True:
            try:
                await publisher.publish(user, b"marker")
            except BrokerUnavailable:
                await asyncio.sleep(0.02)  # the poll interval of a deadline loop
                continue
            try:
                async with asyncio.timeout(0.05):
                    got = await node.received.get()
            except TimeoutError:
                continue
            if got == (user, b"marker"):
                while not node.received.empty():
                    node.received.get_nowait()
                return


async def outage(redis: RedisProcess, *brokers: RedisBroker) -> None:
    """Stop Redis until every broker noticed, then start it again on the same port."""
    await redis.stop()
    await eventually(lambda: not any(b.health().connected for b in brokers))
    await redis.start()


async def test_delivery_resumes_after_a_redis_restart_and_the_hub_is_told_once(
    redis_process: RedisProcess, node: Node, publisher: RedisBroker
) -> None:
    await node.broker.subscribe("alice")
    await arrives(publisher, node, "alice")
    await outage(redis_process, node.broker, publisher)
    await eventually(lambda: node.broker.health().connected)
    await arrives(publisher, node, "alice")
    await publisher.publish("alice", b"after")
    assert await asyncio.wait_for(node.received.get(), 5) == ("alice", b"after")
    assert node.reconnects == 1
    assert node.broker.health().reconnects == 1


async def test_a_subscription_made_during_the_outage_delivers_once_redis_is_back(
    redis_process: RedisProcess, node: Node, publisher: RedisBroker
) -> None:
    await node.broker.subscribe("alice")
    await redis_process.stop()
    await eventually(lambda: not node.broker.health().connected)
    await node.broker.subscribe("bob")  # no connection now: neither raises nor is forgotten
    await node.broker.unsubscribe("alice")
    await redis_process.start()
    await arrives(publisher, node, "bob")
    await publisher.publish("alice", b"not for us")
    await publisher.publish("bob", b"for us")
    assert await asyncio.wait_for(node.received.get(), 5) == ("bob", b"for us")


async def test_a_subscription_made_after_the_outage_delivers(
    redis_process: RedisProcess, node: Node, publisher: RedisBroker
) -> None:
    await node.broker.subscribe("alice")
    await outage(redis_process, node.broker, publisher)
    await eventually(lambda: node.broker.health().connected)
    await node.broker.subscribe("carol")
    await arrives(publisher, node, "carol")


async def test_an_outage_logs_one_warning_and_one_info_and_no_traceback(
    redis_process: RedisProcess, node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    await node.broker.subscribe("alice")
    caplog.set_level(logging.DEBUG, logger="server.broker")
    await redis_process.stop()
    await eventually(lambda: not node.broker.health().connected)
    # Let it fail to reconnect several times before Redis returns.
    attempts_before = time.monotonic()
    await eventually(lambda: time.monotonic() - attempts_before > 0.5)
    await redis_process.start()
    await eventually(lambda: node.broker.health().connected)
    records = [r for r in caplog.records if r.name.startswith("server.broker")]
    assert [(r.levelname, r.getMessage().split(" (")[0]) for r in records] == [
        ("WARNING", "redis broker connection lost"),
        ("INFO", records[-1].getMessage()),
    ]
    assert records[-1].getMessage().startswith("redis broker connected again after")
    assert all(r.exc_info is None for r in records)


async def test_a_broker_started_while_redis_is_down_connects_when_it_appears(
    redis_process: RedisProcess, publisher: RedisBroker
) -> None:
    await redis_process.stop()
    late = Node(quick(redis_process.url))
    try:
        await late.start()  # does not raise: it keeps trying in the background
        await late.broker.subscribe("alice")
        assert not late.broker.health().connected
        await redis_process.start()
        await arrives(publisher, late, "alice")
        assert late.reconnects == 1
    finally:
        await late.broker.close()


async def test_publish_during_an_outage_fails_at_once_with_broker_unavailable(
    redis_process: RedisProcess, publisher: RedisBroker
) -> None:
    await redis_process.stop()
    await eventually(lambda: not publisher.health().connected)
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable):
        await publisher.publish("alice", b"lost")
    assert time.monotonic() - started < 0.2


async def test_a_hung_redis_counts_as_disconnected_and_the_broker_recovers_when_it_resumes(
    redis_process: RedisProcess, node: Node, publisher: RedisBroker
) -> None:
    await node.broker.subscribe("alice")
    await arrives(publisher, node, "alice")
    redis_process.pause()
    try:
        # Three silent heartbeats (0.1 s each) and the connection counts as lost.
        await eventually(lambda: not node.broker.health().connected, within=5)
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable):
            await publisher.publish("alice", b"into the void")
        assert time.monotonic() - started < 1.0  # the command deadline (0.5 s) holds
    finally:
        redis_process.resume()
    await arrives(publisher, node, "alice")
    assert node.reconnects == 1


async def test_reconnect_attempts_back_off_while_redis_stays_down(
    redis_process: RedisProcess,
) -> None:
    delays: list[float] = []

    async def recording_sleep(delay: float) -> None:
        delays.append(delay)
        await asyncio.sleep(delay)

    policy = Backoff(attempts=None, base=0.01, cap=0.04, sleep=recording_sleep, random=lambda: 0.5)
    node = Node(quick(redis_process.url, backoff=policy))
    await node.start()
    try:
        await node.broker.subscribe("alice")
        await redis_process.stop()
        await eventually(lambda: len(delays) >= 6)
        # Every failed attempt waited, and the waits grew to the cap: no spinning.
        assert delays[:6] == pytest.approx([0.005, 0.01, 0.02, 0.02, 0.02, 0.02])
    finally:
        await node.broker.close()


async def test_an_idle_healthy_connection_is_kept_by_its_heartbeats(node: Node) -> None:
    await node.broker.subscribe("alice")
    started = time.monotonic()
    await eventually(lambda: time.monotonic() - started > 1.0)  # ten heartbeats, no traffic
    health = node.broker.health()
    assert health.connected and health.reconnects == 0
    assert health.last_heard_age_s is not None and health.last_heard_age_s < 0.3


async def test_the_settings_set_the_heartbeat_and_the_command_deadline(
    redis_process: RedisProcess,
) -> None:
    """COMPANION_BROKER_HEARTBEAT_S / _TIMEOUT_S reach the broker ``companion serve`` builds:
    with 0.1 s heartbeats a hung Redis is noticed in a fraction of the default's 3 s, and a
    publish gives up after 0.3 s instead of the default 2 s."""
    settings = load(
        {
            "COMPANION_BROKER": redis_process.url,
            "COMPANION_BROKER_HEARTBEAT_S": "0.1",
            "COMPANION_BROKER_TIMEOUT_S": "0.3",
        }
    )
    broker = build_broker(settings)
    assert isinstance(broker, RedisBroker)
    await broker.start(lambda user, payload: None)
    try:
        await eventually(lambda: broker.health().connected, within=5)
        redis_process.pause()
        try:
            started = time.monotonic()
            await eventually(lambda: not broker.health().connected, within=5)
            noticed = time.monotonic() - started
            started = time.monotonic()
            with pytest.raises(BrokerUnavailable):
                await broker.publish("alice", b"into the void")
            gave_up = time.monotonic() - started
        finally:
            redis_process.resume()
    finally:
        await broker.close()
    assert noticed < 2.0  # three silent 0.1 s heartbeats, not three of the default 1 s
    assert gave_up < 1.5  # the 0.3 s command deadline, not the default 2 s
