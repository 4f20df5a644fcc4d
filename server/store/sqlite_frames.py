"""Frames in the SQLite store: the ``frame_buckets`` table and the statements on it.

One row is one part of a bucket of :mod:`server.store.frame_buckets` (a device's minute of
frames, at most :data:`~server.store.frame_buckets.PART_FRAMES` a part), with the part's
frame count, first and last ``ts`` (so a write decodes only the parts that may hold its
frames) and the expiry of its newest frame. :func:`add_frames` writes a whole batch in two
thread round trips at most: one SELECT of the buckets the store does not remember
(:class:`~server.store.open_buckets.OpenBuckets`: the store is the only writer of its file,
so a device's current minute is read once), one ``executemany`` of every part that gains
frames. :class:`~server.store.sqlite.SQLiteStore` calls these functions inside its own
transactions; they raise :class:`sqlite3.Error` as SQLite does, and :class:`ValueError` on
a payload the store did not write.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from typing import Any

import aiosqlite

from brain.model import TIME_ORDER, Frame
from server.store import codec, frame_buckets as buckets, frame_payload as payloads
from server.store.open_buckets import OpenBuckets

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

_COLUMNS = "user_id, start_ms, device, part, count, first_ts, last_ts, payload, expires_at"

_TS = operator.attrgetter("ts")

_READ_BUCKETS_AT_ONCE = 1_000
"""Buckets read by one SELECT (three bound values each, well under SQLite's limit)."""


async def add_frames(
    writer: aiosqlite.Connection,
    known: OpenBuckets,
    grouped: Mapping[buckets.BucketId, Sequence[Frame]],
    retention_days: int,
) -> None:
    """Add each bucket's new frames, in the open transaction of ``writer``.

    The parts of buckets ``known`` does not hold are read first (one SELECT for all of
    them); then every part that gains frames is written by one ``executemany``, so a batch
    costs two thread round trips at most, however many buckets it touches. ``known`` is
    updated with what was written (the caller forgets it if the transaction fails).
    A frame whose key is stored already keeps the stored frame.
    """
    stored = {bucket: known.get(bucket) for bucket in grouped}
    missing = [bucket for bucket, parts in stored.items() if parts is None]
    found: dict[buckets.BucketId, dict[int, buckets.StoredPart]] = {b: {} for b in missing}
    for start in range(0, len(missing), _READ_BUCKETS_AT_ONCE):
        some = missing[start : start + _READ_BUCKETS_AT_ONCE]
        rows = await writer.execute_fetchall(
            f"SELECT {_COLUMNS} FROM frame_buckets"
            " WHERE (user_id, start_ms, device) IN"
            f" (VALUES {', '.join(['(?, ?, ?)'] * len(some))})",
            [value for b in some for value in (b.user_id, b.start_ms, b.device)],
        )
        for user_id, start_ms, device, part, count, first_ts, last_ts, payload, _ in rows:
            info = buckets.PartInfo(part, count, first_ts, last_ts)
            chunks = payloads.chunk_count(payload)
            bucket = buckets.BucketId(user_id, device, start_ms)
            found[bucket][part] = buckets.StoredPart(info, payload, chunks)
    written = []
    remembered = []
    # Oldest minute first, so each device's newest bucket is the one remembered.
    for bucket in sorted(grouped, key=lambda b: b.start_ms):
        parts = stored[bucket]
        before = found[bucket] if parts is None else parts
        changed = buckets.add(bucket, before, grouped[bucket])
        for number, part in changed.items():
            info = part.info
            written.append(
                (
                    bucket.user_id,
                    bucket.start_ms,
                    bucket.device,
                    number,
                    info.count,
                    info.first_ts,
                    info.last_ts,
                    part.payload,
                    info.expires_at(retention_days),
                )
            )
        remembered.append((bucket, {**before, **changed}))
    if written:
        await writer.executemany(
            f"INSERT OR REPLACE INTO frame_buckets ({_COLUMNS}) VALUES ({', '.join('?' * 9)})",
            written,
        )
    for bucket, parts in remembered:
        known.put(bucket, parts)


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
    times = list(map(_TS, found))
    if any(map(operator.ge, times, times[1:])):
        found.sort(key=TIME_ORDER)  # not in strictly rising time (more parts or devices)
    return found


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
        new = {bucket: [frame for _, frame in indexed] for bucket, indexed in grouped.items()}
        await add_frames(writer, OpenBuckets(), new, retention_days)
        await writer.execute("DROP TABLE frames")
    except BaseException:
        await writer.rollback()
        raise
    await writer.commit()
