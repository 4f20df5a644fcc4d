"""The decision history's store contract: every test runs on each adapter (``store``)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

from server.provenance import Provenance
from server.store.base import HistoryEvent, HistoryQuery, Store, UserState

T0 = (int(time.time()) // 60) * 60_000
"""Commit time of the tests (ms): this minute (DynamoDB Local's TTL runs on the real clock)."""
DAY_MS = 86_400_000
RETENTION_DAYS = 90  # the adapters' default


def event(user_id: str, version: int, **changes: object) -> HistoryEvent:
    base = HistoryEvent(
        user_id=user_id,
        version=version,
        at=T0 + version * 1000,
        cause="analysis",
        source="rules",
        state="calm",
        mood="content",
        energy=70,
        reasoning=f"version {version}",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


async def at_version(store: Store, user_id: str, version: int) -> None:
    """Put the user's state at ``version`` (history is only kept for a user with a state)."""
    current = await store.get_state(user_id)
    state = replace(UserState(user_id=user_id), version=version).rehashed()
    await store.put_state(state, 0 if current is None else current.version)


async def recorded(store: Store, user_id: str, query: HistoryQuery | None = None) -> list[int]:
    found = await store.history(user_id, query or HistoryQuery(limit=100), now_ms=T0)
    return [e.version for e in found]


async def test_event_round_trips_every_field(store: Store) -> None:
    await at_version(store, "alice", 1)
    full = event(
        "alice",
        1,
        cause="analysis",
        source="llm",
        state="stressed",
        mood="anxious",
        energy=35,
        reasoning="HR up 20 bpm with no steps",
        actions=("breathing_session",),
        image_url="https://cdn.example/a.png",
        video_url="https://cdn.example/a.webp",
        changed=("state", "mood", "energy"),
        provenance=Provenance(
            model="claude-haiku-4-5",
            cost_usd=0.00042,
            features={"hr": 92.5, "hr_slope": 1.8, "steps_per_min": 0, "weather": "rain"},
            fallback=None,
        ),
    )

    assert await store.put_history(full) is True

    assert await store.history("alice", HistoryQuery(), now_ms=T0) == [full]


async def test_an_event_is_recorded_once_per_user_and_version(store: Store) -> None:
    await at_version(store, "alice", 1)
    first = event("alice", 1)

    assert await store.put_history(first) is True
    assert await store.put_history(first) is False  # a retry
    assert await store.put_history(replace(first, reasoning="other node")) is False

    assert await store.history("alice", HistoryQuery(), now_ms=T0) == [first]


async def test_concurrent_writers_of_one_version_record_it_once(store: Store) -> None:
    await at_version(store, "alice", 1)

    results = await asyncio.gather(*(store.put_history(event("alice", 1)) for _ in range(5)))

    assert sorted(results) == [False, False, False, False, True]
    assert await recorded(store, "alice") == [1]


async def test_no_event_is_recorded_for_a_user_without_state(store: Store) -> None:
    assert await store.put_history(event("ghost", 1)) is False
    assert await recorded(store, "ghost") == []


async def test_no_event_is_recorded_beyond_the_stored_version(store: Store) -> None:
    """The state was erased and began again at a lower version: a late event of the old
    life is not recorded."""
    await at_version(store, "alice", 2)

    assert await store.put_history(event("alice", 3)) is False
    assert await store.put_history(event("alice", 2)) is True
    assert await store.put_history(event("alice", 1)) is True  # a late event of v1
    assert await recorded(store, "alice") == [2, 1]


async def test_history_is_newest_first_and_limited(store: Store) -> None:
    await at_version(store, "alice", 30)
    for version in range(1, 31):
        await store.put_history(event("alice", version))

    assert await recorded(store, "alice", HistoryQuery(limit=5)) == [30, 29, 28, 27, 26]


async def test_version_bounds_are_exclusive_and_combine(store: Store) -> None:
    await at_version(store, "alice", 12)
    for version in range(1, 13):
        await store.put_history(event("alice", version))

    assert await recorded(store, "alice", HistoryQuery(limit=3, before_version=10)) == [9, 8, 7]
    assert await recorded(store, "alice", HistoryQuery(limit=50, since_version=9)) == [12, 11, 10]
    both = HistoryQuery(limit=50, since_version=3, before_version=7)
    assert await recorded(store, "alice", both) == [6, 5, 4]
    assert await recorded(store, "alice", HistoryQuery(since_version=7, before_version=8)) == []


async def test_time_bounds_select_by_commit_time(store: Store) -> None:
    await at_version(store, "alice", 10)
    for version in range(1, 11):  # committed at T0 + version seconds
        await store.put_history(event("alice", version))

    before = HistoryQuery(limit=2, before_ms=T0 + 6000)
    assert await recorded(store, "alice", before) == [5, 4]
    since = HistoryQuery(limit=50, since_ms=T0 + 8000)
    assert await recorded(store, "alice", since) == [10, 9, 8]
    window = HistoryQuery(limit=50, since_ms=T0 + 3000, before_ms=T0 + 5000, before_version=10)
    assert await recorded(store, "alice", window) == [4, 3]


async def test_the_state_at_a_time_is_the_newest_event_before_it(store: Store) -> None:
    await at_version(store, "alice", 3)
    await store.put_history(event("alice", 1, at=T0, state="calm"))
    await store.put_history(event("alice", 2, at=T0 + 60_000, state="stressed"))
    await store.put_history(event("alice", 3, at=T0 + 120_000, state="calm"))

    then = await store.history("alice", HistoryQuery(limit=1, before_ms=T0 + 90_000), now_ms=T0)

    assert [(e.version, e.state) for e in then] == [(2, "stressed")]


async def test_events_past_their_retention_are_left_out(store: Store) -> None:
    await at_version(store, "alice", 2)
    await store.put_history(event("alice", 1, at=T0 - (RETENTION_DAYS + 1) * DAY_MS))
    await store.put_history(event("alice", 2))

    assert await recorded(store, "alice") == [2]
    later = T0 + (RETENTION_DAYS + 1) * DAY_MS
    assert await store.history("alice", HistoryQuery(), now_ms=later) == []


async def test_delete_history_erases_that_user_only(store: Store) -> None:
    for user in ("alice", "bob"):
        await at_version(store, user, 30)
        for version in range(1, 31):  # more than one batch of 25
            await store.put_history(event(user, version))

    assert await store.delete_history("alice") == 30

    assert await recorded(store, "alice") == []
    assert len(await recorded(store, "bob")) == 30
    assert await store.delete_history("alice") == 0


async def test_an_event_put_after_the_erase_is_not_kept(store: Store) -> None:
    """The erase deletes the state, then the history; an event whose write lands after
    both is dropped (its user has no state)."""
    await at_version(store, "alice", 1)
    await store.delete_user("alice")
    await store.delete_history("alice")

    assert await store.put_history(event("alice", 1)) is False
    assert await recorded(store, "alice") == []
