"""The store contract: every test runs on each adapter (the ``store`` fixture's params)."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import replace
from typing import Any

import pytest

from brain.model import CoachStyle, CoachTone, Env, Frame, Profile
from server.errors import StoreError, VersionConflict
from server.store.base import AvatarCacheEntry, Store, Tombstone, Usage, UserState

T0 = (int(time.time()) // 60) * 60_000
"""Frame time of the tests (ms): this minute. Not a fixed date: DynamoDB Local runs TTL
deletion against the real clock, so frames from a fixed past date would vanish mid-test
once their retention has passed."""
DAY_MS = 86_400_000
RETENTION_DAYS = 30  # the adapters' default


def frame(ts: int, *, device: str = "watch", seq: int = 0, hr: float = 70.0) -> Frame:
    return Frame(ts=ts, hr=hr, steps=3, device=device, seq=seq)


def committed(user_id: str, version: int, **changes: Any) -> UserState:
    """A state at ``version`` with its hash computed, as the pipeline would commit it."""
    return replace(UserState(user_id=user_id, version=version), **changes).rehashed()


async def all_frames(store: Store, user_id: str) -> list[Frame]:
    return await store.frames_between(user_id, 0, 10**13, now_ms=T0)


# --- frames -------------------------------------------------------------------------------


async def test_resent_frames_are_stored_once(store: Store) -> None:
    frames = [frame(T0 + i * 1000) for i in range(30)]
    rows = [("alice", f) for f in frames]

    await store.put_frames(rows)
    await store.put_frames(rows)  # the phone resends after a reconnect
    await store.put_frames(rows[:5] + rows[:5])  # and a batch may repeat a frame

    assert await all_frames(store, "alice") == frames


async def test_frames_with_same_ts_but_other_device_or_seq_are_distinct(store: Store) -> None:
    frames = [frame(T0, device="watch"), frame(T0, device="ring"), frame(T0, seq=1)]
    await store.put_frames([("alice", f) for f in frames])

    assert sorted(await all_frames(store, "alice"), key=lambda f: f.key) == sorted(
        frames, key=lambda f: f.key
    )


async def test_frame_round_trips_every_field(store: Store) -> None:
    full = Frame(
        ts=T0,
        hr=72.5,
        hrv=41.0,
        steps=12,
        spo2=97.5,
        skin_temp=33.1,
        resp_rate=14.0,
        device="pixel-watch",
        seq=2,
        env=Env(altitude_m=512.0, temp_c=21.5, humidity_pct=40.0, speed_mps=1.2, weather="rain"),
    )
    bare = Frame(ts=T0 + 1)
    partial_env = Frame(ts=T0 + 2, env=Env(weather="clear"))
    await store.put_frames([("alice", full), ("alice", bare), ("alice", partial_env)])

    assert await all_frames(store, "alice") == [full, bare, partial_env]


async def test_frames_between_is_oldest_first_and_half_open(store: Store) -> None:
    times = [T0 + i * 1000 for i in range(10)]
    shuffled = [("alice", frame(ts)) for ts in times]
    random.Random(7).shuffle(shuffled)
    await store.put_frames(shuffled)
    await store.put_frames([("bob", frame(ts)) for ts in times])

    found = await store.frames_between("alice", times[2], times[6], now_ms=T0)

    assert [f.ts for f in found] == times[2:6]  # start included, end excluded


async def test_frames_between_of_empty_or_inverted_range_is_empty(store: Store) -> None:
    await store.put_frames([("alice", frame(T0))])

    assert await store.frames_between("alice", T0, T0, now_ms=T0) == []
    assert await store.frames_between("alice", T0 + 1, T0, now_ms=T0) == []
    assert await store.frames_between("nobody", 0, 10**13, now_ms=T0) == []


async def test_frames_between_leaves_out_expired_frames(store: Store) -> None:
    old, recent = frame(T0), frame(T0 + 10 * DAY_MS)
    await store.put_frames([("alice", old), ("alice", recent)])

    before_expiry = T0 + RETENTION_DAYS * DAY_MS
    after_expiry = T0 + (RETENTION_DAYS + 1) * DAY_MS

    assert await store.frames_between("alice", 0, 10**13, now_ms=before_expiry) == [old, recent]
    assert await store.frames_between("alice", 0, 10**13, now_ms=after_expiry) == [recent]


async def test_put_frames_stores_a_batch_of_1000_rows_of_many_users(store: Store) -> None:
    rows = [(f"user-{i % 7}", frame(T0 + i)) for i in range(1000)]

    await store.put_frames(rows)

    for user in range(7):
        expected = [f for u, f in rows if u == f"user-{user}"]
        assert await all_frames(store, f"user-{user}") == expected


async def test_put_frames_of_no_rows_does_nothing(store: Store) -> None:
    await store.put_frames([])

    assert await all_frames(store, "alice") == []


async def test_frames_split_shuffled_resent_and_written_at_once_are_each_stored_once(
    store: Store,
) -> None:
    """A 1 Hz watch and a 4 Hz ring (its minutes span parts) over three minutes, written in
    random batches, late frames and resends among them, several batches at once (as the
    ingest's writers do)."""
    rng = random.Random(19)
    watch = [frame(T0 + i * 1000, hr=60.0 + i % 9) for i in range(180)]
    ring = [frame(T0 + i * 250, device="ring", seq=i % 2, hr=70.5) for i in range(720)]
    rows = [("alice", f) for f in watch + ring]
    rows.sort(key=lambda row: row[1].ts + rng.randrange(20_000))  # late by up to 20 s
    batches = []
    while rows:
        size = rng.randrange(1, 60)
        batch, rows = rows[:size], rows[size:]
        done = [row for b in batches for row in b]
        batches.append(batch + rng.sample(done, min(len(done), rng.randrange(4))))

    for start in range(0, len(batches), 3):
        await asyncio.gather(*(store.put_frames(b) for b in batches[start : start + 3]))

    expected = sorted(watch + ring, key=lambda f: (f.ts, f.device, f.seq))
    assert await all_frames(store, "alice") == expected
    await store.put_frames([("alice", f) for f in expected])  # everything resent
    assert await all_frames(store, "alice") == expected


async def test_frames_written_again_after_an_erase_are_stored_again(store: Store) -> None:
    first = [frame(T0 + i * 1000) for i in range(20)]
    await store.put_frames([("alice", f) for f in first])
    await store.delete_user("alice")

    await store.put_frames([("alice", f) for f in first[:10]])  # the phone resends
    assert await all_frames(store, "alice") == first[:10]

    await store.put_frames([("alice", f) for f in first])
    assert await all_frames(store, "alice") == first


# --- user state ---------------------------------------------------------------------------


async def test_state_of_unknown_user_is_none(store: Store) -> None:
    assert await store.get_state("nobody") is None


async def test_first_write_expects_version_0_and_round_trips_every_field(store: Store) -> None:
    state = committed(
        "alice",
        1,
        state="stressed",
        mood="anxious",
        energy=31,
        reasoning="HR up, no steps",
        actions=("breathing_session", "hydrate"),
        source="llm",
        image_url="https://media.example/a.png",
        avatar_status="ready",
        profile=Profile(
            style=CoachStyle.STRICT, tone=CoachTone.DIRECT, base_avatar="owl", tier="premium"
        ),
        updated_at=T0,
    )

    await store.put_state(state, expected_version=0)

    assert await store.get_state("alice") == state


async def test_second_write_expecting_version_0_conflicts(store: Store) -> None:
    await store.put_state(committed("alice", 1), expected_version=0)

    with pytest.raises(VersionConflict) as conflict:
        await store.put_state(committed("alice", 1, mood="happy"), expected_version=0)

    assert (conflict.value.expected, conflict.value.found) == (0, 1)
    assert await store.get_state("alice") == committed("alice", 1)


async def test_stale_expected_version_conflicts_and_keeps_newer_state(store: Store) -> None:
    await store.put_state(committed("alice", 1), expected_version=0)
    newer = committed("alice", 2, mood="happy", image_url=None)
    await store.put_state(newer, expected_version=1)

    with pytest.raises(VersionConflict) as conflict:
        await store.put_state(committed("alice", 2, mood="tired"), expected_version=1)

    assert (conflict.value.user_id, conflict.value.expected, conflict.value.found) == (
        "alice",
        1,
        2,
    )
    assert await store.get_state("alice") == newer


async def test_expecting_a_version_of_a_missing_state_conflicts(store: Store) -> None:
    with pytest.raises(VersionConflict) as conflict:
        await store.put_state(committed("alice", 3), expected_version=2)

    assert conflict.value.found is None
    assert await store.get_state("alice") is None


async def test_profile_only_write_keeps_version(store: Store) -> None:
    state = committed("alice", 1)
    await store.put_state(state, expected_version=0)
    profiled = replace(state, profile=Profile(base_avatar="cat"))

    await store.put_state(profiled, expected_version=1)

    stored = await store.get_state("alice")
    assert stored == profiled
    assert stored is not None and stored.version == 1


async def test_two_concurrent_writers_of_one_version_one_wins(store: Store) -> None:
    await store.put_state(committed("alice", 1), expected_version=0)
    a, b = committed("alice", 2, mood="happy"), committed("alice", 2, mood="tired")

    results = await asyncio.gather(
        store.put_state(a, expected_version=1),
        store.put_state(b, expected_version=1),
        return_exceptions=True,
    )

    conflicts = [r for r in results if isinstance(r, VersionConflict)]
    assert len(conflicts) == 1 and results.count(None) == 1
    winner = a if results[0] is None else b
    assert await store.get_state("alice") == winner


async def test_users_with_avatar_status_finds_exactly_those_users(store: Store) -> None:
    statuses = {"u1": "failed", "u2": "ready", "u3": "failed", "u4": "none", "u5": "failed"}
    for user_id, status in statuses.items():
        await store.put_state(committed(user_id, 1, avatar_status=status), expected_version=0)

    failed = await store.users_with_avatar_status("failed")
    limited = await store.users_with_avatar_status("failed", limit=2)

    assert sorted(failed) == ["u1", "u3", "u5"]
    assert len(limited) == 2 and set(limited) <= {"u1", "u3", "u5"}
    assert await store.users_with_avatar_status("generating") == []


# --- avatar cache -------------------------------------------------------------------------


async def test_avatar_cache_get_put_and_replace(store: Store) -> None:
    first = AvatarCacheEntry("h1", "https://m/1.png", "a calm fox", T0)
    with_video = AvatarCacheEntry("h1", "https://m/2.png", "a calm fox", T0 + 1, "https://m/2.mp4")

    assert await store.get_avatar("h1") is None
    await store.put_avatar(first)
    assert await store.get_avatar("h1") == first
    await store.put_avatar(with_video)
    assert await store.get_avatar("h1") == with_video
    assert await store.get_avatar("h2") is None


# --- usage --------------------------------------------------------------------------------


async def test_usage_of_a_day_without_calls_is_zero(store: Store) -> None:
    assert await store.get_usage("alice", "2025-10-09") == Usage("alice", "2025-10-09")


async def test_add_usage_accumulates_and_returns_totals(store: Store) -> None:
    first = await store.add_usage(
        "alice", "2025-10-09", calls=1, input_tokens=100, output_tokens=20, cost_usd=0.25
    )
    second = await store.add_usage(
        "alice", "2025-10-09", calls=2, input_tokens=50, output_tokens=5, cost_usd=0.5
    )
    await store.add_usage(
        "alice", "2025-10-10", calls=1, input_tokens=1, output_tokens=1, cost_usd=1
    )

    assert first == Usage("alice", "2025-10-09", 1, 100, 20, 0.25)
    assert second == Usage("alice", "2025-10-09", 3, 150, 25, 0.75)
    assert await store.get_usage("alice", "2025-10-09") == second


async def test_concurrent_usage_adds_all_count(store: Store) -> None:
    adds = 25

    await asyncio.gather(
        *(
            store.add_usage(
                "alice", "2025-10-09", calls=1, input_tokens=10, output_tokens=2, cost_usd=0.125
            )
            for _ in range(adds)
        )
    )

    total = await store.get_usage("alice", "2025-10-09")
    assert (total.calls, total.input_tokens, total.output_tokens) == (adds, 10 * adds, 2 * adds)
    assert total.cost_usd == pytest.approx(0.125 * adds)


# --- export and delete --------------------------------------------------------------------


async def _fill(store: Store, user_id: str) -> tuple[UserState, list[Frame]]:
    state = committed(user_id, 1, mood="happy")
    frames = [frame(T0 + i * 1000) for i in range(40)]  # more than one batch of 25
    await store.put_state(state, expected_version=0)
    await store.put_frames([(user_id, f) for f in frames])
    for day in ("2025-10-09", "2025-10-10"):
        await store.add_usage(user_id, day, calls=1, input_tokens=5, output_tokens=5, cost_usd=0.5)
    return state, frames


async def test_service_costs_accumulate_beside_the_llm_usage_of_the_day(store: Store) -> None:
    await store.add_service_costs("alice", "2025-10-09", {"images_usd": 0.039})
    await store.add_usage(
        "alice", "2025-10-09", calls=1, input_tokens=10, output_tokens=5, cost_usd=0.01
    )
    await asyncio.gather(
        *(
            store.add_service_costs("alice", "2025-10-09", {"storage_usd": 0.25, "pushes_usd": 0.5})
            for _ in range(4)
        )
    )
    usage = await store.get_usage("alice", "2025-10-09")
    assert (usage.calls, usage.cost_usd) == (1, pytest.approx(0.01))
    assert usage.images_usd == pytest.approx(0.039)
    assert (usage.storage_usd, usage.pushes_usd, usage.clips_usd) == (1.0, 2.0, 0.0)
    exported = await store.export_user("alice", now_ms=T0)
    assert exported["usage"][0]["images_usd"] == pytest.approx(0.039)
    with pytest.raises(ValueError, match="service cost"):
        await store.add_service_costs("alice", "2025-10-09", {"llm_usd": 1.0})


async def test_export_user_holds_state_unexpired_frames_and_usage(store: Store) -> None:
    state, frames = await _fill(store, "alice")
    await _fill(store, "bob")
    expired = frame(T0 - 40 * DAY_MS)
    await store.put_frames([("alice", expired)])

    exported = await store.export_user("alice", now_ms=T0)

    assert exported["user_id"] == "alice"
    assert exported["state"]["version"] == state.version
    assert exported["state"]["mood"] == "happy"
    assert [f["ts"] for f in exported["frames"]] == [f.ts for f in frames]
    assert exported["frames"][0] == {"ts": T0, "hr": 70.0, "steps": 3, "device": "watch", "seq": 0}
    assert [u["day"] for u in exported["usage"]] == ["2025-10-09", "2025-10-10"]


async def test_delete_user_erases_that_user_only(store: Store) -> None:
    await _fill(store, "alice")
    bob_state, bob_frames = await _fill(store, "bob")
    avatar = AvatarCacheEntry("h1", "https://m/1.png", "fox", T0)
    await store.put_avatar(avatar)

    deleted = await store.delete_user("alice")

    assert deleted == 40 + 1 + 2  # frames, state, usage days
    assert await store.export_user("alice", now_ms=T0) == {
        "user_id": "alice",
        "state": None,
        "frames": [],
        "usage": [],
    }
    assert await store.get_state("bob") == bob_state
    assert await all_frames(store, "bob") == bob_frames
    assert (await store.get_usage("bob", "2025-10-09")).calls == 1
    assert await store.get_avatar("h1") == avatar  # shared cache, not the user's data
    assert await store.delete_user("alice") == 0


# --- erase epochs (a tombstone makes an erase final) ---------------------------------------


async def test_erase_leaves_a_tombstone_of_the_next_epoch_one_version_on(
    store: Store,
) -> None:
    """The blank state of an erased user is a version of its own (devices take it as news);
    erasing a tombstone again keeps its version."""
    await _fill(store, "alice")  # version 1
    assert await store.tombstone("alice") == Tombstone()

    await store.delete_user("alice", at_ms=1_000)

    assert await store.tombstone("alice") == Tombstone(version=2, epoch=1, erased_at=1_000)
    assert await store.get_state("alice") is None
    await store.delete_user("alice", at_ms=2_000)
    assert await store.tombstone("alice") == Tombstone(version=2, epoch=2, erased_at=2_000)
    assert await store.tombstone("bob") == Tombstone()


async def test_erasing_a_user_never_seen_still_raises_the_epoch(store: Store) -> None:
    assert await store.delete_user("ghost", at_ms=1_000) == 0

    assert await store.tombstone("ghost") == Tombstone(version=0, epoch=1, erased_at=1_000)
    assert await store.get_state("ghost") is None


async def test_an_erase_without_a_time_is_stamped_now(store: Store) -> None:
    """The tombstone keeps when the erase was: the blank state that follows dates from it
    (its delta's commit time, and a re-publish's, is the erase's, not 1970)."""
    before = int(time.time() * 1000)
    await store.delete_user("alice")
    after = int(time.time() * 1000)

    assert before <= (await store.tombstone("alice")).erased_at <= after


async def test_a_write_read_before_an_erase_conflicts_after_it(store: Store) -> None:
    before, _ = await _fill(store, "alice")  # read at epoch 0, version 1
    await store.delete_user("alice")

    with pytest.raises(VersionConflict):  # the next version, of the old epoch
        await store.put_state(committed("alice", 2, mood="tired"), expected_version=1)
    with pytest.raises(VersionConflict):  # nor as a first write of the old epoch
        await store.put_state(committed("alice", 1, mood="tired"), expected_version=0)

    assert before.epoch == 0
    assert await store.get_state("alice") is None
    assert await store.users_with_avatar_status("none") == []


async def test_a_write_of_the_new_epoch_goes_on_from_the_tombstone_version(store: Store) -> None:
    await _fill(store, "alice")  # version 1, erased at version 2
    await store.delete_user("alice")
    fresh = replace(committed("alice", 3, mood="tired"), epoch=1)

    await store.put_state(fresh, expected_version=2)
    await store.put_state(replace(fresh, version=4, mood="happy"), expected_version=3)

    assert await store.get_state("alice") == replace(fresh, version=4, mood="happy")
    assert await store.tombstone("alice") == Tombstone()  # a state again, not a tombstone
    assert await store.users_with_avatar_status("none") == ["alice"]
    with pytest.raises(VersionConflict):  # the old epoch stays refused
        await store.put_state(committed("alice", 5), expected_version=4)


async def test_a_user_erased_before_any_state_starts_at_version_one(store: Store) -> None:
    await store.delete_user("alice")

    await store.put_state(replace(committed("alice", 1), epoch=1), expected_version=0)

    stored = await store.get_state("alice")
    assert stored is not None and (stored.version, stored.epoch) == (1, 1)


# --- lifecycle ----------------------------------------------------------------------------


async def test_ping_answers_when_open(store: Store) -> None:
    await store.ping()


async def test_closed_store_raises_store_error(store: Store) -> None:
    await store.close()
    await store.close()  # idempotent

    with pytest.raises(StoreError):
        await store.get_state("alice")
