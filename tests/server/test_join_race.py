"""A hello whose state read is overtaken by a commit: the device gets the commit's delta
while the read is on its way, and the snapshot that follows never takes it back a version.

The store is a real SQLite store whose first armed read returns what the file held, but
only once the test lets it go — the interleaving a busy store gives by chance, made
deterministic.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from server.settings import Settings
from server.store.base import UserState
from server.store.sqlite import SQLiteStore
from tests.conftest import recv, send, start_server
from tests.store.test_contract import committed


class HeldReadStore(SQLiteStore):
    """Its next read of a user's state, once armed, reads the file at once and answers
    after :attr:`release` is set; :attr:`reading` is set when that read began."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.armed = False
        self.reading = asyncio.Event()
        self.release = asyncio.Event()

    async def get_state(self, user_id: str) -> UserState | None:
        state = await super().get_state(user_id)
        if self.armed:
            self.armed = False
            self.reading.set()
            async with asyncio.timeout(10):
                await self.release.wait()
        return state


async def test_a_snapshot_read_before_a_delta_went_out_never_steps_the_device_back(
    settings: Settings, tmp_path: Path
) -> None:
    store = HeldReadStore(tmp_path / "held.sqlite3")
    async with start_server(settings, store=store) as live:
        # Written behind the node's back: it keeps nothing of alice, so hello reads the store.
        await store.put_state(committed("alice", 1, mood="tired"), expected_version=0)
        store.armed = True
        ws = await live.connect("alice", hello=False)
        try:
            await send(ws, {"op": "hello", "client": "test"})
            async with asyncio.timeout(10):
                await store.reading.wait()  # the hello holds version 1, not yet sent
            await live.services.state.update("alice", lambda _: {"mood": "happy"}, cause="demo")
            delta = await recv(ws)
            store.release.set()
            after = await recv(ws)
        finally:
            await ws.close()

    assert (delta["op"], delta["version"]) == ("delta", 2)
    assert (after["op"], after["version"], after["mood"]) == ("snapshot", 2, "happy"), after
