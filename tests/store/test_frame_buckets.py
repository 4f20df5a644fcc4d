"""Frames packed per (user, device, minute): the pure codec, and the SQLite file it makes."""

from __future__ import annotations

import pathlib
import sqlite3
import time
import zlib

import orjson
import pytest

from brain import scenarios
from brain.model import Env, Frame
from server.store import codec, frame_buckets as buckets, frame_payload
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
    cut = buckets.encode(MINUTE, [Frame(ts=T0, device="watch-1")])[:-3]
    for payload in (b"", b"not zlib", codec.encode_frame(Frame(ts=T0)), cut, b"\x02\x85"):
        with pytest.raises(ValueError, match="not a frame bucket"):
            buckets.decode("watch-1", T0, payload)


def stored_part(number: int, frames: list[Frame], chunks: int = 1) -> buckets.StoredPart:
    return buckets.StoredPart(
        buckets.PartInfo.of(number, frames), buckets.encode(MINUTE, frames), chunks
    )


def test_plan_keeps_the_first_frame_of_a_key_and_adds_only_new_ones() -> None:
    stored = [Frame(ts=T0, hr=60.0, device="watch-1"), Frame(ts=T0 + 2000, device="watch-1")]
    parts = {0: stored_part(0, stored)}
    resent = [Frame(ts=T0 + 2000, hr=99.0, device="watch-1"), Frame(ts=T0 + 1000, device="watch-1")]

    assert buckets.plan(MINUTE, parts, resent + resent) == {0: [resent[1]]}
    assert buckets.plan(MINUTE, parts, stored) == {}
    changed = buckets.add(MINUTE, parts, resent)
    assert buckets.decode("watch-1", T0, changed[0].payload) == [stored[0], resent[1], stored[1]]
    assert (changed[0].chunks, changed[0].version) == (2, 1)


def test_a_fast_device_fills_parts_and_in_order_frames_touch_only_the_last() -> None:
    fast = [Frame(ts=T0 + i * 10, hr=60.0, device="watch-1") for i in range(245)]
    changed = buckets.add(MINUTE, {}, fast)
    assert [part.info.count for part in changed.values()] == [120, 120, 5]

    later = [Frame(ts=T0 + 50_000 + i, hr=61.0, device="watch-1") for i in range(3)]
    # The parts are not payloads of this bucket's frames: only a decode would find that.
    blind = {n: buckets.StoredPart(p.info, b"garbage", p.chunks) for n, p in changed.items()}
    assert list(buckets.add(MINUTE, {**changed, 2: changed[2]}, later)) == [2]
    assert buckets.plan(MINUTE, blind, later) == {2: later}  # in order: nothing decoded
    with pytest.raises(ValueError):  # a resend of an old frame decodes the parts holding it
        buckets.plan(MINUTE, blind, [fast[7]])
    assert buckets.plan(MINUTE, changed, [fast[7]]) == {}


def test_in_order_writes_append_chunks_and_every_fourth_re_encodes_the_part() -> None:
    stream = scenarios.generate("hike", start_ms=T0, minutes=1, every_s=0.5, device="watch-1")
    stream = stream[:100]
    parts: dict[int, buckets.StoredPart] = {}
    counts = []
    for start in range(0, 100, 10):
        parts = {**parts, **buckets.add(MINUTE, parts, stream[start : start + 10])}
        counts.append(parts[0].chunks)

    assert counts == [1, 2, 3, 4, 1, 2, 3, 4, 1, 2]
    assert buckets.decode("watch-1", T0, parts[0].payload) == stream
    assert parts[0].version == 10
    whole = buckets.encode(MINUTE, stream)
    assert len(parts[0].payload) < 1.5 * len(whole)


def test_a_payload_of_the_first_layout_decodes_and_is_re_encoded_by_the_next_write() -> None:
    frames = [Frame(ts=T0 + i * 1000, hr=60.5, device="watch-1", seq=i % 2) for i in range(5)]
    columns = {"t": {"s": 0, "d": [0, 1000, 1000, 1000, 1000]}, "q": [0, 1, 0, 1, 0],
               "hr": {"s": 1, "d": [605, 0, 0, 0, 0]}}  # fmt: skip
    first_layout = zlib.compress(orjson.dumps({"v": 1, "c": columns}))

    assert buckets.decode("watch-1", T0, first_layout) == frames
    assert frame_payload.chunk_count(first_layout) == frame_payload.MAX_CHUNKS
    old = {0: buckets.StoredPart(buckets.PartInfo.of(0, frames), first_layout, 4)}
    later = Frame(ts=T0 + 9000, device="watch-1")
    changed = buckets.add(MINUTE, old, [later])
    assert changed[0].chunks == 1
    assert buckets.decode("watch-1", T0, changed[0].payload) == [*frames, later]


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


def test_between_keeps_the_range_and_each_frames_own_retention() -> None:
    now_ms = T0 + 30 * 86_400_000 + 1_234
    frames = [Frame(ts=T0 + d, hr=60.0) for d in range(-3_000, 3_000, 250)]
    frames += [Frame(ts=now_ms - d, hr=60.0) for d in (0, 999, 1_000, 1_001, 5_000)]
    for days in (30, 31):
        for start, end in ((T0 - 2_000, T0 + 1_000), (T0 - 10**9, now_ms), (T0, T0)):
            expected = [
                frame
                for frame in frames
                if start <= frame.ts < end and codec.expires_at(frame, days) >= now_ms // 1000
            ]
            assert buckets.between(frames, start, end, now_ms, days) == expected
    cut = (now_ms // 1000 - 30 * codec.SECONDS_PER_DAY) * 1000
    kept = buckets.between(frames, T0 - 10**9, now_ms, now_ms, 30)
    assert min(f.ts for f in kept) == min(f.ts for f in frames if f.ts >= cut)
