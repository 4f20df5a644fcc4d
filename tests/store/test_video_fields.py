"""The clip fields of a user's state (``video_url``, ``video_status``) in both stores, and
SQLite files made before them (or before the usage table's cache and service columns)."""

from __future__ import annotations

import pathlib
import sqlite3

from brain.hashing import state_hash
from server.store.base import Store, UserState
from server.store.sqlite import SQLiteStore
from tests.store.test_contract import committed


async def test_video_url_and_status_round_trip(store: Store) -> None:
    with_clip = committed("alice", 1, video_url="https://m/avatars/ab.webp", video_status="ready")
    await store.put_state(with_clip, expected_version=0)

    assert await store.get_state("alice") == with_clip


async def test_a_state_without_a_clip_reads_back_none_and_status_none(store: Store) -> None:
    await store.put_state(committed("bob", 1), expected_version=0)

    stored = await store.get_state("bob")
    assert stored is not None
    assert (stored.video_url, stored.video_status) == (None, "none")


def test_the_state_hash_covers_the_clip_fields() -> None:
    plain = UserState("carol").visible()
    with_clip = {**plain, "video_url": "https://m/a.webp", "video_status": "ready"}
    generating = {**plain, "video_status": "generating"}

    assert len({state_hash(plain), state_hash(with_clip), state_hash(generating)}) == 3


_OLD_USER_STATE = """
CREATE TABLE user_state (
    user_id TEXT PRIMARY KEY, version INTEGER NOT NULL, state_hash TEXT NOT NULL,
    state TEXT NOT NULL, mood TEXT NOT NULL, energy INTEGER NOT NULL,
    reasoning TEXT NOT NULL, actions TEXT NOT NULL, source TEXT NOT NULL, image_url TEXT,
    avatar_status TEXT NOT NULL, profile TEXT NOT NULL, updated_at INTEGER NOT NULL
);
INSERT INTO user_state VALUES
    ('dan', 3, 'h', 'calm', 'content', 70, '', '[]', 'rules', 'https://m/a.png', 'ready',
     '{}', 1700000000000);
"""


async def test_a_sqlite_file_from_before_clips_gains_the_columns_and_keeps_its_rows(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as old:
        old.executescript(_OLD_USER_STATE)
    store = SQLiteStore(path)
    await store.open()
    try:
        before = await store.get_state("dan")
        assert before is not None
        await store.put_state(
            committed("dan", 4, video_url="https://m/a.webp", video_status="ready"),
            expected_version=3,
        )
        after = await store.get_state("dan")
    finally:
        await store.close()

    assert (before.image_url, before.video_url, before.video_status) == (
        "https://m/a.png",
        None,
        "none",
    )
    assert after is not None and after.video_url == "https://m/a.webp"


async def test_opening_a_migrated_file_again_is_harmless(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as old:
        old.executescript(_OLD_USER_STATE)
    for _ in range(2):
        store = SQLiteStore(path)
        await store.open()
        state = await store.get_state("dan")
        await store.close()
        assert state is not None and state.version == 3


_OLD_USAGE = """
CREATE TABLE usage (
    user_id TEXT NOT NULL, day TEXT NOT NULL, calls INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL, cost_usd REAL NOT NULL,
    PRIMARY KEY (user_id, day)
);
INSERT INTO usage VALUES ('dan', '2026-11-30', 2, 900, 120, 0.0015);
"""


async def test_a_usage_table_from_before_cache_and_service_costs_gains_them(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as old:
        old.executescript(_OLD_USAGE)
    store = SQLiteStore(path)
    await store.open()
    try:
        before = await store.get_usage("dan", "2026-11-30")
        await store.add_service_costs("dan", "2026-11-30", {"images_usd": 0.04})
        await store.add_usage(
            "dan",
            "2026-11-30",
            calls=1,
            input_tokens=100,
            output_tokens=10,
            cost_usd=0.0001,
            cache_read_tokens=50,
        )
        after = await store.get_usage("dan", "2026-11-30")
    finally:
        await store.close()

    assert (before.calls, before.input_tokens, before.cache_read_tokens) == (2, 900, 0)
    assert (after.calls, after.cache_read_tokens, after.images_usd) == (3, 50, 0.04)
