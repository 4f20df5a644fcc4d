"""An acked SQLite write survives the death of the process that made it (SIGKILL)."""

from __future__ import annotations

import asyncio
import pathlib
import signal
import sys
import time

import pytest

from server.store.sqlite import SQLiteStore

pytestmark = pytest.mark.slow  # starts a writer process

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
T0 = (int(time.time()) // 60) * 60_000

# The writer acks (prints) once put_frames has returned, then blocks on stdin until killed.
WRITER = f"""
import asyncio, pathlib, sys
from brain.model import Frame
from server.store.sqlite import SQLiteStore

async def main():
    store = SQLiteStore(pathlib.Path(sys.argv[1]))
    await store.open()
    await store.put_frames([("alice", Frame(ts={T0} + i, hr=70.0)) for i in range(500)])
    print("acked", flush=True)
    sys.stdin.read()

asyncio.run(main())
"""


async def kill_after_ack(script: str, path: pathlib.Path) -> None:
    """Run ``script`` on the store file ``path`` in a process of its own and SIGKILL it as
    soon as it printed ``acked`` (no close, no checkpoint: only the WAL holds the writes)."""
    writer = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        str(path),
        cwd=REPO_ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert writer.stdout is not None
        line = await asyncio.wait_for(writer.stdout.readline(), timeout=30)
        assert line == b"acked\n"
    finally:
        writer.send_signal(signal.SIGKILL)
        await writer.wait()
        assert writer.stdin is not None
        writer.stdin.close()
    assert writer.returncode == -signal.SIGKILL


async def test_frames_acked_before_a_kill_are_in_the_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "store.sqlite3"
    await kill_after_ack(WRITER, path)

    store = SQLiteStore(path)
    await store.open()
    try:
        frames = await store.frames_between("alice", 0, 10**13, now_ms=T0)
    finally:
        await store.close()
    assert [f.ts for f in frames] == [T0 + i for i in range(500)]


# The same for the commit path: a state write and its history event, acked (printed) once
# put_state and put_history returned.
STATE_WRITER = f"""
import asyncio, pathlib, sys
from dataclasses import replace
from server.store.base import HistoryEvent, UserState
from server.store.sqlite import SQLiteStore

async def main():
    store = SQLiteStore(pathlib.Path(sys.argv[1]))
    await store.open()
    for version in range(1, 51):
        state = replace(UserState.initial("alice"), version=version, energy=version).rehashed()
        event = HistoryEvent(
            user_id="alice", version=version, at={T0}, cause="demo", source="manual",
            state="calm", mood="content", energy=version, reasoning="kill test",
        )
        previous = replace(event, version=version - 1)
        await asyncio.gather(
            store.put_state(state, version - 1),
            store.put_history(previous) if version > 1 else asyncio.sleep(0),
        )
    await store.put_history(replace(event, version=50))
    print("acked", flush=True)
    sys.stdin.read()

asyncio.run(main())
"""


async def test_states_and_history_acked_before_a_kill_are_in_the_file(
    tmp_path: pathlib.Path,
) -> None:
    from server.store.base import HistoryQuery

    path = tmp_path / "store.sqlite3"
    await kill_after_ack(STATE_WRITER, path)

    store = SQLiteStore(path)
    await store.open()
    try:
        state = await store.get_state("alice")
        events = await store.history("alice", HistoryQuery(limit=100), now_ms=T0)
    finally:
        await store.close()
    assert state is not None and (state.version, state.energy) == (50, 50)
    assert [e.version for e in events] == list(range(50, 0, -1))
