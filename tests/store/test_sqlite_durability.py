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


async def test_frames_acked_before_a_kill_are_in_the_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "store.sqlite3"
    writer = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        WRITER,
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
        writer.send_signal(signal.SIGKILL)  # no close(), no checkpoint: only the WAL holds it
        await writer.wait()
        assert writer.stdin is not None
        writer.stdin.close()

    store = SQLiteStore(path)
    await store.open()
    try:
        frames = await store.frames_between("alice", 0, 10**13, now_ms=T0)
    finally:
        await store.close()
    assert [f.ts for f in frames] == [T0 + i for i in range(500)]
    assert writer.returncode == -signal.SIGKILL
