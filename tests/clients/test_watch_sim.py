"""The simulated watch's haptic log: what it records for each state it shows."""

from __future__ import annotations

from pathlib import Path

import orjson

from clients.watch.sim import SimulatedWatch

NOW_S = 1_800_000_000.0


async def test_the_first_state_never_committed_logs_no_latency_and_later_ones_do(
    tmp_path: Path,
) -> None:
    """Version 0 has updated_at 0: its latency is unknown, not 56 years."""
    log = tmp_path / "haptics.jsonl"
    lines: list[str] = []
    watch = SimulatedWatch(log, clock=lambda: NOW_S, out=lines.append)
    try:
        initial = {"op": "state", "version": 0, "state_hash": "a", "state": "calm", "updated_at": 0}
        await watch.show(initial)
        committed = {**initial, "version": 1, "state_hash": "b", "updated_at": NOW_S * 1000 - 40}
        committed["updated_at"] = int(committed["updated_at"])
        await watch.show(committed)
    finally:
        await watch.close()
    events = [orjson.loads(line) for line in log.read_bytes().splitlines()]
    assert [e["latency_ms"] for e in events] == [None, 40]
    assert [line.split()[1] for line in lines] == ["v=0", "v=1"]
