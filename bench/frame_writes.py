"""The store's own cost of a frame write: ``put_frames`` on SQLite, CPU and wall per batch.

    python -m bench.frame_writes                      # 200 devices, 1 / 10 / 25 frames a write
    python -m bench.frame_writes --devices 200 --frames 10 --batches 60

Each batch holds ``--frames`` new frames of each of ``--devices`` devices at 50 frames/s (so
the batches walk through minutes and parts as the ingest benchmark's phones do), written
by one ``put_frames`` into a fresh file (WAL, ``synchronous=FULL``). CPU is the process's
(both aiosqlite's thread and the loop), so it holds better than wall time on a busy
machine. Prints one line per setting; writes nothing.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import tempfile
import time

import uvloop

from brain.model import Frame
from server.store.sqlite import SQLiteStore

FRAME_MS = 20
"""50 frames a second per device, as in ``bench.ingest``'s default setting."""


async def measure(devices: int, frames: int, batches: int) -> str:
    """One setting: the CPU and wall time of each batch, summarised on one line."""
    start = (int(time.time()) // 60) * 60_000 + 30_000
    cpus, walls = [], []
    with tempfile.TemporaryDirectory() as directory:
        store = SQLiteStore(pathlib.Path(directory) / "frames.sqlite3")
        await store.open()
        try:
            for batch in range(batches):
                rows = [
                    (
                        f"user-{device}",
                        Frame(
                            ts=start + (batch * frames + i) * FRAME_MS,
                            hr=60.0 + (batch + i) % 30 / 10,
                            hrv=40.0,
                            steps=1,
                            device="watch",
                        ),
                    )
                    for device in range(devices)
                    for i in range(frames)
                ]
                cpu, wall = time.process_time(), time.perf_counter()
                await store.put_frames(rows)
                cpus.append(time.process_time() - cpu)
                walls.append(time.perf_counter() - wall)
        finally:
            await store.close()
    count = devices * frames * batches
    return (
        f"{devices} devices x {frames} frames a write, {batches} batches:"
        f" CPU {sum(cpus) / count * 1e6:.1f} us a frame,"
        f" batch CPU median {statistics.median(cpus) * 1e3:.1f} ms,"
        f" batch wall median {statistics.median(walls) * 1e3:.1f} ms"
        f" max {max(walls) * 1e3:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--frames", type=int, nargs="*", default=[1, 10, 25])
    parser.add_argument("--batches", type=int, default=60)
    args = parser.parse_args()
    for frames in args.frames:
        print(uvloop.run(measure(args.devices, frames, args.batches)), flush=True)


if __name__ == "__main__":
    main()
