"""Lost sockets leave the hub at once and the broker in one background chore: a fleet cut
(thousands of sockets lost in one turn of the event loop) starts one task, not one each,
and a user followed again before the chore reaches it stays subscribed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from server.broker.memory import MemoryBroker
from server.metrics import Metrics
from server.protocol import Delta
from server.push.hub import FollowUp, Hub


class CountingBroker(MemoryBroker):
    """The memory broker, recording what it is asked to subscribe and unsubscribe."""

    def __init__(self) -> None:
        super().__init__()
        self.subscribed: set[str] = set()
        self.unsubscribed: list[str] = []

    async def subscribe(self, user_id: str) -> None:
        await super().subscribe(user_id)
        self.subscribed.add(user_id)

    async def unsubscribe(self, user_id: str) -> None:
        await super().unsubscribe(user_id)
        self.subscribed.discard(user_id)
        self.unsubscribed.append(user_id)


class Phone:
    wants_summaries = False

    def offer(self, text: str, frame: bytes) -> None:
        pass

    def offer_delta(
        self, delta: Delta, text: str, frame: bytes, follow: FollowUp | None, now: float
    ) -> None:
        pass


@pytest.fixture
async def hub() -> AsyncIterator[tuple[Hub, CountingBroker]]:
    broker = CountingBroker()
    hub = Hub(broker, Metrics())
    await hub.start()
    yield hub, broker
    await hub.close()


async def until(condition: object, within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while not condition():  # type: ignore[operator]  # noqa: ASYNC110
            await asyncio.sleep(0)  # let the hub's chore run a step


async def test_a_fleet_cut_unsubscribes_every_user_in_one_chore(
    hub: tuple[Hub, CountingBroker],
) -> None:
    the_hub, broker = hub
    phones = {f"user-{i}": Phone() for i in range(2000)}
    for user_id, phone in phones.items():
        await the_hub.join(user_id, phone)
    tasks_before = len(asyncio.all_tasks())

    for user_id, phone in phones.items():
        the_hub.drop([user_id], phone)
    started = len(asyncio.all_tasks()) - tasks_before
    await until(lambda: not broker.subscribed)

    assert started == 1
    assert sorted(broker.unsubscribed) == sorted(phones)


async def test_a_user_followed_again_before_the_chore_stays_subscribed(
    hub: tuple[Hub, CountingBroker],
) -> None:
    the_hub, broker = hub
    old, new, other = Phone(), Phone(), Phone()
    await the_hub.join("alice", old)
    await the_hub.join("bob", other)

    the_hub.drop(["alice", "bob"], old)  # alice's only peer; bob it never followed
    the_hub.drop(["bob"], other)
    await the_hub.join("alice", new)  # the phone is back before the chore ran
    await until(lambda: "bob" in broker.unsubscribed)

    assert "alice" in broker.subscribed
    assert "alice" not in broker.unsubscribed
