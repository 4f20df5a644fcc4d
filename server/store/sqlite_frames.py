"""Frames in the SQLite store: the ``frame_buckets`` table and the statements on it.

One row is one part of a bucket of :mod:`server.store.frame_buckets` (a device's minute of
frames, at most :data:`~server.store.frame_buckets.PART_FRAMES` a part), with the part's
frame count, first and last ``ts`` (so a write reads only the parts that may hold its
frames) and the expiry of its newest frame. :class:`~server.store.sqlite.SQLiteStore` calls
these functions inside its own transactions; they raise :class:`sqlite3.Error` as SQLite
does, and :class:`ValueError` on a payload the store did not write.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aiosqlite

from brain.model import TIME_ORDER, Frame
from server.store import codec
from server.store import frame_buckets as buckets

SCHEMA = """
CREATE TABLE IF NOT EXISTS frame_buckets (
    user_id TEXT NOT NULL,
    start_ms INTEGER NOT NULL,
    device TEXT NOT NULL,
    part INTEGER NOT NULL,
    count INTEGER NOT NULL,
    first_ts INTEGER NOT NULL,
    last_ts INTEGER NOT NULL,
    payload BLOB NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, start_ms, device, part)
) WITHOUT ROWID;
"""

_WHERE_BUCKET = "WHERE user_id = ? AND start_ms = ? AND device = ?"


async def add_to_bucket(
    writer: aiosqlite.Connection,
    bucket: buckets.BucketId,
    new: Sequence[Frame],
    retention_days: int,
) -> None:
    """Add ``new`` to ``bucket``: read the parts that may hold them, write the parts that
    gain frames (a frame whose key is stored already keeps the stored frame)."""
    key = (bucket.user_id, bucket.start_ms, bucket.device)
    parts = [
        buckets.PartInfo(*row)
        for row in await writer.execute_fetchall(
            f"SELECT part, count, first_ts, last_ts FROM frame_buckets {_WHERE_BUCKET}", key
        )
    ]
    loaded = {}
    for number in buckets.parts_to_read(parts, new):
        found = await writer.execute_fetchall(
            f"SELECT payload FROM frame_buckets {_WHERE_BUCKET} AND part = ?", (*key, number)
        )
        loaded[number] = buckets.decode(bucket.device, bucket.start_ms, next(iter(found))[0])
    for number, frames in buckets.place(parts, loaded, new).items():
        info = buckets.PartInfo.of(number, frames)
        await writer.execute(
            "INSERT OR REPLACE INTO frame_buckets (user_id, start_ms, device, part, count,"
            " first_ts, last_ts, payload, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                *key,
                number,
                info.count,
                info.first_ts,
                info.last_ts,
                buckets.encode(bucket, frames),
                buckets.expires_at(frames, retention_days),
            ),
        )


def range_query(
    user_id: str, start_ms: int, end_ms: int, now_ms: int
) -> tuple[str, tuple[int | str, ...]]:
    """The SELECT of the parts that may hold the user's unexpired frames of a time range
    (rows: device, start_ms, payload), and its parameters."""
    return (
        "SELECT device, start_ms, payload FROM frame_buckets"
        " WHERE user_id = ? AND start_ms >= ? AND start_ms < ? AND expires_at >= ?",
        (user_id, buckets.bucket_start(start_ms), end_ms, now_ms // 1000),
    )


def frames_of_rows(
    rows: Sequence[Any],
    start_ms: int,
    end_ms: int,
    now_ms: int,
    retention_days: int,
) -> list[Frame]:
    """The frames of :func:`range_query`'s rows in the range and retention, oldest first."""
    frames = [
        frame for device, start, payload in rows for frame in buckets.decode(device, start, payload)
    ]
    found = buckets.between(frames, start_ms, end_ms, now_ms, retention_days)
    return sorted(found, key=TIME_ORDER)


async def migrate_frame_rows(writer: aiosqlite.Connection, retention_days: int) -> None:
    """Pack the rows of the one-row-per-frame ``frames`` table of older versions into
    buckets, then drop it (once, in one transaction)."""
    listed = await writer.execute_fetchall(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'frames'"
    )
    if not list(listed):
        return
    await writer.execute("BEGIN IMMEDIATE")
    try:
        rows = await writer.execute_fetchall("SELECT user_id, payload FROM frames")
        grouped = buckets.group(
            (i, str(row[0]), codec.decode_frame(row[1])) for i, row in enumerate(rows)
        )
        for bucket, indexed in grouped.items():
            await add_to_bucket(writer, bucket, [frame for _, frame in indexed], retention_days)
        await writer.execute("DROP TABLE frames")
    except BaseException:
        await writer.rollback()
        raise
    await writer.commit()
