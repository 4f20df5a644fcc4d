"""Expired frames are deleted from SQLite by the retention stage; fresh ones stay."""

from __future__ import annotations

import time
from dataclasses import replace

from brain.model import Frame
from server.analysis.retention import purge_once
from server.settings import Settings
from server.store.sqlite import SQLiteStore
from tests.conftest import start_server

DAY_MS = 24 * 3600 * 1000


async def test_purge_deletes_expired_frames_and_keeps_fresh_ones(settings: Settings) -> None:
    settings = replace(settings, frame_retention_days=1)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = SQLiteStore(settings.sqlite_path, frame_retention_days=1)
    now = int(time.time() * 1000)
    async with start_server(settings, store=store) as live:
        old = Frame(ts=now - 3 * DAY_MS, hr=60, device="w")
        fresh = Frame(ts=now - 1000, hr=61, device="w")
        await store.put_frames([("alice", old), ("alice", fresh)])
        assert await purge_once(live.services) == 1
        assert await purge_once(live.services) == 0
        kept = await store.frames_between("alice", 0, now + 1, now_ms=now - 4 * DAY_MS)
    assert kept == [fresh]
