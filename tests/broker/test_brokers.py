"""The broker contract on both implementations, and two server nodes sharing Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import pytest

from server.broker.base import Broker
from server.broker.memory import MemoryBroker
from server.broker.redis import RedisBroker
from server.settings import Settings
from server.store.sqlite import SQLiteStore
from tests.conftest import auth, recv_op, start_server

Received = asyncio.Queue[tuple[str, bytes]]


def receive_into(received: Received) -> Callable[[str, bytes], None]:
    """A handler that queues what arrives, and raises on a ``boom`` payload (as a buggy hub
    would)."""

    def handler(user: str, payload: bytes) -> None:
        if payload == b"boom":
            raise RuntimeError("handler bug")
        received.put_nowait((user, payload))

    return handler


@pytest.fixture(params=["memory", "redis"])
async def pair(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Broker, Broker, Received]]:
    """A publishing and a subscribing broker (the same one for memory) and what it receives."""
    received: Received = asyncio.Queue()
    if request.param == "memory":
        broker = MemoryBroker()
        await broker.start(receive_into(received))
        yield broker, broker, received
        await broker.close()
        return
    url = request.getfixturevalue("redis_server")
    publisher, subscriber = RedisBroker(url), RedisBroker(url)
    await publisher.start(lambda user, payload: None)
    await subscriber.start(receive_into(received))
    yield publisher, subscriber, received
    await publisher.close()
    await subscriber.close()


async def _publish_until_received(publisher: Broker, received: Received, user: str) -> None:
    """Redis SUBSCRIBE is acknowledged asynchronously: publish a marker until it arrives."""
    async with asyncio.timeout(5):
        while True:
            await publisher.publish(user, b"marker")
            try:
                async with asyncio.timeout(0.05):
                    got = await received.get()
            except TimeoutError:
                continue
            if got == (user, b"marker"):
                while not received.empty():
                    received.get_nowait()
                return


async def test_subscribed_user_messages_arrive_in_order(
    pair: tuple[Broker, Broker, Received],
) -> None:
    publisher, subscriber, received = pair
    await subscriber.subscribe("alice")
    await _publish_until_received(publisher, received, "alice")
    for n in range(20):
        await publisher.publish("alice", b"m%d" % n)
    got = [await asyncio.wait_for(received.get(), 5) for _ in range(20)]
    assert got == [("alice", b"m%d" % n) for n in range(20)]


async def test_messages_of_unsubscribed_users_do_not_arrive(
    pair: tuple[Broker, Broker, Received],
) -> None:
    publisher, subscriber, received = pair
    await subscriber.subscribe("alice")
    await subscriber.subscribe("bob")
    await _publish_until_received(publisher, received, "alice")
    await subscriber.unsubscribe("alice")
    await publisher.publish("alice", b"not for us")
    await publisher.publish("bob", b"for us")
    # Messages of one publisher arrive in order, so bob's is the first thing that can come.
    assert await asyncio.wait_for(received.get(), 5) == ("bob", b"for us")


async def test_a_raising_handler_is_logged_and_counted_and_delivery_goes_on(
    pair: tuple[Broker, Broker, Received], caplog: pytest.LogCaptureFixture
) -> None:
    publisher, subscriber, received = pair
    await subscriber.subscribe("alice")
    await _publish_until_received(publisher, received, "alice")
    await publisher.publish("alice", b"boom")  # never reaches the publisher as an error
    await publisher.publish("alice", b"next")
    assert await asyncio.wait_for(received.get(), 5) == ("alice", b"next")
    assert subscriber.health().handler_errors == 1
    assert [r.getMessage() for r in caplog.records if r.name == "server.broker.base"] == [
        "broker handler failed on a message of alice; delivering on"
    ]


async def test_a_change_committed_on_one_node_reaches_a_phone_on_another(
    settings: Settings, redis_server: str
) -> None:
    node_a = replace(settings, broker=redis_server)
    node_b = replace(settings, broker=redis_server)
    store_a, store_b = SQLiteStore(settings.sqlite_path), SQLiteStore(settings.sqlite_path)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    async with (
        start_server(node_a, store=store_a) as a,
        start_server(node_b, store=store_b) as b,
    ):
        phone = await a.connect("alice")
        try:
            async with b.http() as http:
                # The phone's node subscribes asynchronously; commit until a delta lands.
                async with asyncio.timeout(10):
                    while True:
                        answer = await http.post(
                            "/v1/demo/users/alice/state",
                            json={"state": "stressed", "force": True},
                            headers=auth("alice", "service"),
                        )
                        assert answer.status_code == 200
                        try:
                            delta = await recv_op(phone, "delta", within=0.2)
                        except TimeoutError:
                            continue
                        break
                # Subscribed now: the next commit on B is the next delta at A, exactly.
                while delta["version"] < answer.json()["version"]:
                    delta = await recv_op(phone, "delta")
                answer = await http.post(
                    "/v1/demo/users/alice/state",
                    json={"state": "calm", "mood": "happy"},
                    headers=auth("alice", "service"),
                )
                delta = await recv_op(phone, "delta")
            assert delta["version"] == answer.json()["version"]
            assert delta["state_hash"] == answer.json()["state_hash"]
            assert delta["changes"]["state"] == "calm"
            assert delta["changes"]["mood"] == "happy"
        finally:
            await phone.close()
