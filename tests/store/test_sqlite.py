"""What only the SQLite store does: purging expired frames (DynamoDB has TTL for that)."""

from __future__ import annotations

import asyncio
import pathlib
import time

from brain.model import Frame
from server.store.sqlite import SQLiteStore

DAY_MS = 86_400_000
T0 = (int(time.time()) // 60) * 60_000


async def test_purge_expired_deletes_only_frames_past_retention(tmp_path: pathlib.Path) -> None:
    store = SQLiteStore(tmp_path / "store.sqlite3", frame_retention_days=7)
    await store.open()
    try:
        old, recent = Frame(ts=T0 - 8 * DAY_MS), Frame(ts=T0 - 6 * DAY_MS)
        await store.put_frames([("alice", old), ("alice", recent), ("bob", old)])

        purged = await store.purge_expired(now_ms=T0)

        assert purged == 2
        # Read as of long ago, so the read filter cannot be what hides the old frames.
        assert await store.frames_between("alice", 0, 10**13, now_ms=0) == [recent]
        assert await store.frames_between("bob", 0, 10**13, now_ms=0) == []
    finally:
        await store.close()


async def test_concurrent_state_writes_each_keep_their_version_check(
    tmp_path: pathlib.Path,
) -> None:
    from dataclasses import replace

    import pytest

    from server.errors import VersionConflict
    from server.store.base import UserState

    store = SQLiteStore(tmp_path / "store.sqlite3")
    await store.open()
    try:
        users = [f"u{i}" for i in range(50)]
        firsts = [replace(UserState.initial(u), version=1, state="stressed") for u in users]
        # Two writers race on u0 inside the same group: the first in arrival order wins.
        rival = replace(UserState.initial("u0"), version=1, state="calm")
        results = await asyncio.gather(
            *(store.put_state(s, 0) for s in firsts), store.put_state(rival, 0),
            return_exceptions=True,
        )  # fmt: skip
        assert results[:50] == [None] * 50
        assert isinstance(results[50], VersionConflict)
        assert results[50].found == 1
        for user in users:
            stored = await store.get_state(user)
            assert stored is not None
            assert (stored.version, stored.state) == (1, "stressed")
        with pytest.raises(VersionConflict):
            await store.put_state(replace(firsts[1], version=2), 0)
    finally:
        await store.close()


async def test_a_burst_of_state_writes_and_history_events_keeps_each_outcome(
    tmp_path: pathlib.Path,
) -> None:
    """State writes and history events arriving together share group commits; each write
    still gets its own outcome (written, conflict, inserted, already recorded)."""
    from dataclasses import replace

    from server.errors import VersionConflict
    from server.store.base import HistoryEvent, HistoryQuery, UserState

    def event(user_id: str, version: int) -> HistoryEvent:
        return HistoryEvent(
            user_id=user_id, version=version, at=T0, cause="demo", source="manual",
            state="calm", mood="content", energy=70, reasoning=f"v{version}",
        )  # fmt: skip

    store = SQLiteStore(tmp_path / "store.sqlite3")
    await store.open()
    try:
        await store.put_state(replace(UserState.initial("old"), version=1).rehashed(), 0)
        assert await store.put_history(event("old", 1))
        fresh = [replace(UserState.initial(f"u{i}"), version=1).rehashed() for i in range(30)]
        stale = replace(UserState.initial("old"), version=5).rehashed()
        results = await asyncio.gather(
            *(store.put_state(s, 0) for s in fresh),
            store.put_state(stale, 3),
            store.put_history(event("old", 1)),  # recorded already
            *(store.put_history(event(f"u{i}", 1)) for i in range(30)),  # after their state
            return_exceptions=True,
        )
        assert results[:30] == [None] * 30
        assert isinstance(results[30], VersionConflict)
        assert results[30].found == 1
        assert results[31] is False
        # An event queued with its state's write lands in that group or the next, never
        # before the state: each is inserted.
        assert results[32:] == [True] * 30
    finally:
        await store.close()

    reopened = SQLiteStore(tmp_path / "store.sqlite3")
    await reopened.open()
    try:
        for i in range(30):
            stored = await reopened.get_state(f"u{i}")
            assert stored is not None and stored.version == 1
            found = await reopened.history(f"u{i}", HistoryQuery(limit=5), now_ms=T0)
            assert [e.version for e in found] == [1]
    finally:
        await reopened.close()


async def test_a_state_write_to_a_closed_store_raises_store_error(
    tmp_path: pathlib.Path,
) -> None:
    from dataclasses import replace

    import pytest

    from server.errors import StoreError
    from server.store.base import UserState

    store = SQLiteStore(tmp_path / "store.sqlite3")
    await store.open()
    await store.close()
    with pytest.raises(StoreError):
        await store.put_state(replace(UserState.initial("u"), version=1).rehashed(), 0)


async def test_concurrent_service_cost_additions_each_add_up(tmp_path: pathlib.Path) -> None:
    """Many user-days added at once (a cost flush) share group commits; none is lost, and
    two additions to one user-day in the same group both count."""
    store = SQLiteStore(tmp_path / "store.sqlite3")
    await store.open()
    try:
        day = "2026-12-01"
        await asyncio.gather(
            *(store.add_service_costs(f"u{i}", day, {"pushes_usd": 0.5}) for i in range(300)),
            store.add_service_costs("u0", day, {"pushes_usd": 0.25, "images_usd": 1.0}),
        )
        assert (await store.get_usage("u299", "2026-12-01")).pushes_usd == 0.5
        u0 = await store.get_usage("u0", "2026-12-01")
        assert (u0.pushes_usd, u0.images_usd) == (0.75, 1.0)
    finally:
        await store.close()


async def test_close_commits_row_writes_still_waiting_for_a_state_write(
    tmp_path: pathlib.Path,
) -> None:
    """History events queued while a group is being committed, waiting to ride with a
    state write, are committed by close(), not left to their timer."""
    from dataclasses import replace

    from server.store.base import HistoryEvent, HistoryQuery, UserState

    store = SQLiteStore(tmp_path / "store.sqlite3")
    await store.open()
    await store.put_state(replace(UserState.initial("u"), version=3).rehashed(), 0)
    event = HistoryEvent(
        user_id="u", version=1, at=T0, cause="demo", source="manual",
        state="calm", mood="content", energy=70, reasoning="close",
    )  # fmt: skip
    events = [replace(event, version=v) for v in (1, 2, 3)]
    in_flight = asyncio.create_task(
        store.put_state(replace(UserState.initial("u"), version=4).rehashed(), 3)
    )
    for _ in range(3):  # its group is on the commit thread now
        await asyncio.sleep(0)
    waiting = [asyncio.create_task(store.put_history(e)) for e in events]
    await asyncio.sleep(0)  # queued behind that group, their 2 ms not yet up
    await store.close()
    await in_flight
    assert [await w for w in waiting] == [True, True, True]

    reopened = SQLiteStore(tmp_path / "store.sqlite3")
    await reopened.open()
    try:
        found = await reopened.history("u", HistoryQuery(limit=5), now_ms=T0)
        assert [e.version for e in found] == [3, 2, 1]
    finally:
        await reopened.close()
