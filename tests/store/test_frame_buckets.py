"""Frames packed per (user, device, minute): the pure codec, and the SQLite file it makes."""

from __future__ import annotations

import pathlib
import sqlite3
import time

import pytest

from brain import scenarios
from brain.model import Env, Frame
from server.store import codec
from server.store import frame_buckets as buckets
from server.store.sqlite import SQLiteStore

T0 = (int(time.time()) // 60) * 60_000
MINUTE = buckets.BucketId("alice", "watch-1", T0)


def test_a_bucket_round_trips_every_field_seq_and_an_empty_env() -> None:
    frames = [
        Frame(ts=T0, hr=61.5, hrv=40.0, steps=3, spo2=97.5, skin_temp=33.25, resp_rate=14.0,
              device="watch-1", env=Env(altitude_m=120.0, weather="rain")),
        Frame(ts=T0, device="watch-1", seq=7),
        Frame(ts=T0 + 59_999, hr=70, device="watch-1", env=Env()),
        Frame(ts=T0 + 59_999, hr=70.123456, hrv=1e300, device="watch-1", seq=1),
    ]  # fmt: skip

    assert buckets.decode("watch-1", T0, buckets.encode(MINUTE, frames)) == frames


def test_a_frame_of_another_device_or_minute_is_refused() -> None:
    with pytest.raises(ValueError, match="does not belong"):
        buckets.encode(MINUTE, [Frame(ts=T0 + 60_000, device="watch-1")])
    with pytest.raises(ValueError, match="does not belong"):
        buckets.encode(MINUTE, [Frame(ts=T0, device="ring")])


def test_a_payload_that_is_not_a_bucket_raises_value_error() -> None:
    for payload in (b"", b"not zlib", codec.encode_frame(Frame(ts=T0))):
        with pytest.raises(ValueError, match="not a frame bucket"):
            buckets.decode("watch-1", T0, payload)


def test_place_keeps_the_first_frame_of_a_key_and_adds_only_new_ones() -> None:
    stored = [Frame(ts=T0, hr=60.0), Frame(ts=T0 + 2000, hr=62.0)]
    parts = [buckets.PartInfo.of(0, stored)]
    resent = [Frame(ts=T0 + 2000, hr=99.0), Frame(ts=T0 + 1000, hr=61.0)]

    assert buckets.parts_to_read(parts, resent) == {0}
    changed = buckets.place(parts, {0: stored}, resent + resent)

    assert changed == {0: [stored[0], resent[1], stored[1]]}
    assert buckets.place(parts, {0: stored}, stored) == {}


def test_a_fast_device_fills_parts_and_in_order_frames_touch_only_the_last() -> None:
    fast = [Frame(ts=T0 + i * 10, hr=60.0) for i in range(buckets.PART_FRAMES * 2 + 5)]
    changed = buckets.place([], {}, fast)
    assert [len(frames) for frames in changed.values()] == [120, 120, 5]
    parts = [buckets.PartInfo.of(n, frames) for n, frames in changed.items()]

    later = [Frame(ts=T0 + 50_000 + i, hr=61.0) for i in range(3)]
    assert buckets.parts_to_read(parts, later) == {2}
    assert list(buckets.place(parts, {2: changed[2]}, later)) == [2]
    # A resend of an old frame is checked against the part whose range holds it.
    assert buckets.parts_to_read(parts, [fast[7]]) == {0, 2}


@pytest.mark.parametrize("kind", scenarios.KINDS)
def test_a_minute_at_1_hz_fits_one_write_unit(kind: str) -> None:
    """60 frames of any scenario pack under 1 KB, the size of one DynamoDB write unit."""
    frames = scenarios.generate(kind, start_ms=T0, minutes=1, every_s=1, device="watch-1")

    payload = buckets.encode(MINUTE, frames)

    assert len(frames) == 60
    # The item adds its key, version, count and expiry: about 70 bytes with a short user id.
    assert len(payload) + 70 <= 1024
    assert len(payload) * 10 < sum(len(codec.encode_frame(f)) for f in frames)


async def test_a_file_of_the_one_row_per_frame_layout_is_packed_on_open(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "old.sqlite3"
    frames = scenarios.generate("calm", start_ms=T0, minutes=3, every_s=1, device="watch-1")
    with sqlite3.connect(path) as old:
        old.execute(
            "CREATE TABLE frames (user_id TEXT NOT NULL, sk TEXT NOT NULL, ts INTEGER NOT NULL,"
            " payload BLOB NOT NULL, expires_at INTEGER NOT NULL, PRIMARY KEY (user_id, sk))"
        )
        old.executemany(
            "INSERT INTO frames VALUES ('alice', ?, ?, ?, ?)",
            [(f.key, f.ts, codec.encode_frame(f), codec.expires_at(f, 30)) for f in frames],
        )
    store = SQLiteStore(path)
    await store.open()
    try:
        assert await store.frames_between("alice", 0, 10**13, now_ms=T0) == frames
        assert await store.delete_user("alice") == len(frames)
    finally:
        await store.close()
    with sqlite3.connect(path) as reopened:
        tables = {row[0] for row in reopened.execute("SELECT name FROM sqlite_master")}
    assert "frames" not in tables


async def test_an_hour_at_1_hz_takes_a_tenth_of_the_bytes_a_row_per_frame_took(
    tmp_path: pathlib.Path,
) -> None:
    store = SQLiteStore(tmp_path / "store.sqlite3")
    frames = scenarios.generate("exercise", start_ms=T0, minutes=60, every_s=1, device="w")
    await store.open()
    try:
        for start in range(0, len(frames), 30):  # the way a phone uploads: small batches
            await store.put_frames([("alice", f) for f in frames[start : start + 30]])
    finally:
        await store.close()
    with sqlite3.connect(tmp_path / "store.sqlite3") as db:
        db.execute("VACUUM")
        (stored,) = db.execute("SELECT sum(length(payload)) FROM frame_buckets").fetchone()
    one_row_each = sum(len(codec.encode_frame(f)) + len(f.key) + 30 for f in frames)
    assert stored * 10 < one_row_each
