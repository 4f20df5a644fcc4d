"""What only the SQLite store does: purging expired frames (DynamoDB has TTL for that)."""

from __future__ import annotations

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
