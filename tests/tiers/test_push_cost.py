"""What the hub pushes reaches the cost ledger: bytes per user summed in memory, billed by
tier at the cost meter's flush (never a store write per push)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
from websockets.asyncio.client import ClientConnection

from brain.analyst.base import utc_day
from brain.prices import pushed_bytes_cost
from server.push.hub import PushCounts, Pushed
from server.settings import Settings
from tests.conftest import SECRET, LiveServer, auth, start_server
from tests.server.conftest import commit


def frame_bytes(text: str) -> int:
    """The bytes of a server's (unmasked) WebSocket text frame carrying ``text``."""
    size = len(text.encode())
    header = 2 if size <= 125 else 4 if size <= 0xFFFF else 10
    return header + size


def sample(live: LiveServer, name: str, labels: dict[str, str]) -> float:
    value = live.services.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else float(value)


async def delta_text(ws: ClientConnection, version: int, within: float = 5.0) -> str:
    """The text of the delta of ``version`` as the server sent it (skipping other messages)."""
    async with asyncio.timeout(within):
        while True:
            text = await ws.recv()
            assert isinstance(text, str)
            message = orjson.loads(text)
            if message["op"] == "delta" and message["version"] == version:
                return text


async def test_pushed_bytes_are_billed_per_user_and_tier_at_the_flush(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, secret=SECRET)
    async with start_server(settings) as live, live.http() as client:
        cost = live.services.cost
        assert cost is not None
        answer = await client.put(
            "/v1/users/bob/tier", json={"tier": "premium"}, headers=auth("bob", "service")
        )
        assert answer.status_code == 200, answer.text
        alice = await live.connect("alice", "watch")
        alice_phone = await live.connect("alice", "phone")
        bob = await live.connect("bob", "watch")
        await cost.flush(live.services.store)  # what came before: not under test

        pushed: dict[str, int] = {"alice": 0, "bob": 0}
        for energy in (20, 50, 90):
            body = await commit(client, "alice", energy=energy, reasoning=f"energy {energy}")
            for ws in (alice, alice_phone):
                pushed["alice"] += frame_bytes(await delta_text(ws, body["version"]))
        for mood in ("happy", "tired"):
            body = await commit(client, "bob", mood=mood)
            pushed["bob"] += frame_bytes(await delta_text(bob, body["version"]))

        day = utc_day(live.services.now_ms())
        before = await live.services.store.get_usage("alice", day)
        await cost.flush(live.services.store)
        alice_usage = await live.services.store.get_usage("alice", day)
        bob_usage = await live.services.store.get_usage("bob", day)
        free = sample(live, "companion_pushed_bytes_total", {"tier": "free"})
        premium = sample(live, "companion_pushed_bytes_total", {"tier": "premium"})
        billed = sample(live, "companion_cost_usd_total", {"tier": "premium", "service": "pushes"})
        for ws in (alice, alice_phone, bob):
            await ws.close()

    assert before.pushes_usd == 0  # summed in memory until the flush
    assert (free, premium) == (pushed["alice"], pushed["bob"])
    assert alice_usage.pushes_usd == pytest.approx(pushed_bytes_cost(6, pushed["alice"]))
    assert bob_usage.pushes_usd == pytest.approx(pushed_bytes_cost(2, pushed["bob"]))
    assert billed == pytest.approx(bob_usage.pushes_usd)


def test_push_counts_sum_per_user_and_start_afresh() -> None:
    counts = PushCounts()
    counts.add("alice", 2, 150)
    counts.add("alice", 1, 90)
    counts.add("bob", 0, 500)  # nobody took it
    counts.add("carol", 1, 40)
    counts.forget("carol")  # erased: nothing billed
    assert counts.take() == {"alice": Pushed(3, 390)}
    assert counts.take() == {}


def test_a_pushed_frame_costs_its_bytes_and_the_transport_overhead() -> None:
    assert pushed_bytes_cost(0, 0) == 0
    assert pushed_bytes_cost(1, 200) > pushed_bytes_cost(0, 200) > 0
    assert pushed_bytes_cost(10, 2_000) == pytest.approx(10 * pushed_bytes_cost(1, 200))


async def test_a_flush_bills_many_users_in_slices_with_the_loop_running_between() -> None:
    """Billing thousands of users' pushes lets other work (pushes) run between slices, and
    still bills every user once, the dollars metric summed per tier."""
    from prometheus_client import CollectorRegistry

    from brain.tiers import DEFAULT_TIERS
    from server.cost import BILL_AT_ONCE, CostMeter
    from server.tiers import TierBook

    class Ledger:
        async def add_service_costs(self, user_id: str, day: str, costs: object) -> None:
            return None

    registry = CollectorRegistry()
    meter = CostMeter(registry, TierBook(DEFAULT_TIERS))
    meter.pushes = PushCounts()
    users = [f"u{i}" for i in range(3 * BILL_AT_ONCE)]
    for user in users:
        meter.pushes.add(user, 2, 300)
    seen_between: list[bool] = []

    async def watch() -> None:
        while True:
            first, last = meter.today(users[0]), meter.today(users[-1])
            seen_between.append(first.total_usd > 0 and last.total_usd == 0)
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0)
    try:
        assert await meter.flush(Ledger()) == len(users)
    finally:
        watcher.cancel()
    assert any(seen_between)  # the loop ran while some users were billed and others not
    each = pushed_bytes_cost(2, 600)
    assert all(meter.today(u).total_usd == pytest.approx(each) for u in users)
    tier = DEFAULT_TIERS.default.name
    billed = registry.get_sample_value(
        "companion_cost_usd_total", {"tier": tier, "service": "pushes"}
    )
    assert billed == pytest.approx(each * len(users))


async def test_a_user_erased_during_a_flush_is_neither_billed_nor_written_after() -> None:
    """An erase between the flush's slices drops the user's pushes not billed yet and the
    user-days not written yet: nothing reaches the ledger for them after the erase."""
    from prometheus_client import CollectorRegistry

    from brain.tiers import DEFAULT_TIERS
    from server.cost import BILL_AT_ONCE, CostMeter
    from server.tiers import TierBook

    meter = CostMeter(CollectorRegistry(), TierBook(DEFAULT_TIERS))
    meter.pushes = PushCounts()
    users = [f"u{i}" for i in range(3 * BILL_AT_ONCE)]
    for user in users:
        meter.pushes.add(user, 1, 100)
    written: list[str] = []

    class Ledger:
        async def add_service_costs(self, user_id: str, day: str, costs: object) -> None:
            if not written:
                meter.forget(users[-2])  # erased while the ledger is being written
            written.append(user_id)

    async def erase_while_billing() -> None:
        for _ in range(100_000):  # turns of the event loop, until the first slice is billed
            if meter.today(users[0]).total_usd > 0:
                meter.forget(users[-1])  # some users billed, this one not yet
                return
            await asyncio.sleep(0)

    eraser = asyncio.create_task(erase_while_billing())
    await asyncio.sleep(0)
    await meter.flush(Ledger())
    await eraser
    assert users[-1] not in written and meter.today(users[-1]).total_usd == 0
    assert users[-2] not in written
    assert len(written) == len(users) - 2
