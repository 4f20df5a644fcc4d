"""The device book on a real SQLite store: coalesced, written-behind reports and the gauge."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from server.hops.devices import MAX_DEVICES_PER_USER, REFRESH_S, DeviceBook
from server.metrics import Metrics
from server.store.sqlite import SQLiteStore

T0 = 1_750_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(tmp_path / "book.sqlite3")
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def gauge(metrics: Metrics, kind: str) -> float:
    value = metrics.registry.get_sample_value("companion_devices_behind", {"kind": kind})
    return 0.0 if value is None else value


async def stored_seen_at(store: SQLiteStore, device: str) -> int:
    (seen,) = [s for s in await store.devices_seen("alice") if s.device == device]
    return seen.seen_at


async def test_a_1hz_watch_costs_one_write_a_minute(store: SQLiteStore) -> None:
    clock = Clock()
    book = DeviceBook(store, Metrics(), clock)
    await book.record("alice", "watch-1", "watch", 4)
    await book.close()  # waits for the writes behind
    assert await stored_seen_at(store, "watch-1") == int(T0 * 1000)
    for second in range(1, int(REFRESH_S)):
        clock.now = T0 + second
        await book.record("alice", "watch-1", "watch", 4)
    await book.close()
    assert await stored_seen_at(store, "watch-1") == int(T0 * 1000)  # nothing new written
    (view,) = await book.devices("alice", 4)
    assert view.seen.seen_at == int((T0 + REFRESH_S - 1) * 1000)  # this node knows better
    clock.now = T0 + REFRESH_S
    await book.record("alice", "watch-1", "watch", 4)
    await book.close()
    assert await stored_seen_at(store, "watch-1") == int((T0 + REFRESH_S) * 1000)


async def test_a_new_version_is_written_at_once(store: SQLiteStore) -> None:
    clock = Clock()
    book = DeviceBook(store, Metrics(), clock)
    await book.record("alice", "watch-1", "watch", 4)
    clock.now += 1
    await book.record("alice", "watch-1", "watch", 5)
    await book.close()
    (seen,) = await store.devices_seen("alice")
    assert (seen.version, seen.seen_at) == (5, int(clock.now * 1000))


async def test_a_user_has_a_bounded_number_of_devices(store: SQLiteStore) -> None:
    book = DeviceBook(store, Metrics(), Clock())
    for n in range(MAX_DEVICES_PER_USER):
        assert await book.record("alice", f"d{n}", "watch", 1)
    assert not await book.record("alice", "one-more", "watch", 1)
    assert await book.record("alice", "d0", "watch", 2)  # a known device still reports
    await book.close()
    assert len(await store.devices_seen("alice")) == MAX_DEVICES_PER_USER


async def test_the_gauge_counts_devices_more_than_one_version_behind(store: SQLiteStore) -> None:
    metrics = Metrics()
    book = DeviceBook(store, metrics, Clock())
    await book.record("alice", "watch-1", "watch", 3)
    await book.record("alice", "phone", "phone", 3)
    book.heard("alice", 4)
    assert (gauge(metrics, "watch"), gauge(metrics, "phone")) == (0, 0)  # one behind is normal
    book.heard("alice", 5)
    assert (gauge(metrics, "watch"), gauge(metrics, "phone")) == (1, 1)
    await book.record("alice", "phone", "phone", 5)
    assert (gauge(metrics, "watch"), gauge(metrics, "phone")) == (1, 0)
    book.forget("alice")
    assert gauge(metrics, "watch") == 0
    await book.close()


async def test_a_forgotten_user_is_not_written_back(store: SQLiteStore) -> None:
    book = DeviceBook(store, Metrics(), Clock())
    await book.record("alice", "watch-1", "watch", 3)
    book.forget("alice")  # erased before the write behind ran
    await book.close()
    assert await store.devices_seen("alice") == []


async def test_a_report_beyond_the_current_version_counts_as_the_current_one(
    store: SQLiteStore,
) -> None:
    metrics = Metrics()
    book = DeviceBook(store, metrics, Clock())
    await book.record("alice", "phone", "phone", 3, current=3)
    await book.record("alice", "watch-1", "watch", 2**53, current=3)
    (phone, watch) = await book.devices("alice", 3)
    await book.close()
    assert (phone.behind, watch.seen.version, watch.behind) == (0, 3, 0)
    assert gauge(metrics, "phone") == 0
