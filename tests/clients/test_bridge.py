"""The phone bridge against a real server process: crashes on either side lose nothing.

The server and the bridge are child processes killed with SIGKILL mid-stream (no flush,
no goodbye) and started again; the simulated watch is a third process. The source is a
file of frames, so "every frame the source produced" is known exactly.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

from brain.scenarios import generate
from server.protocol import frame_to_wire
from tests.clients.conftest import Child
from tests.conftest import token

FRAMES = 400


def write_source(path: Path) -> list[dict[str, Any]]:
    """A JSON-lines file of FRAMES frames, one per second, ending a minute ago."""
    start_ms = int(time.time() * 1000) - (FRAMES + 60) * 1000
    frames = [
        frame_to_wire(f)
        for f in generate("stress", start_ms=start_ms, minutes=FRAMES / 60, every_s=1)
    ]
    path.write_bytes(b"".join(orjson.dumps(f) + b"\n" for f in frames))
    return frames


def key(frame: dict[str, Any]) -> tuple[int, str, int]:
    return frame["ts"], frame.get("device", "unknown"), frame.get("seq", 0)


async def test_bridge_loses_nothing_when_server_and_bridge_are_killed_and_restarted(
    tmp_path: Path,
    spawn: Callable[..., Any],
    start_server_process: Callable[..., Any],
    server_port: int,
) -> None:
    source = write_source(tmp_path / "frames.jsonl")
    url = f"http://127.0.0.1:{server_port}"
    service = {"Authorization": f"Bearer {token('ops', 'service')}"}
    server: Child = await start_server_process()
    watch: Child = await spawn(
        "watch-sim", "watch-sim", "--port", "0", "--log", str(tmp_path / "haptics.jsonl")
    )
    watch_port = (await watch.expect(r"listening on 127\.0\.0\.1:(\d+)"))[1]
    bridge_args = (
        "bridge", "--server", url, "--token", token("alice", "phone"),
        "--source", "file", "--file", str(tmp_path / "frames.jsonl"), "--rate", "40",
        "--batch", "10", "--journal", str(tmp_path / "phone" / "alice.journal"),
        "--watch-port", watch_port, "--max-backoff", "1", "--exit-when-done", "-v",
    )  # fmt: skip
    bridge: Child = await spawn("bridge", *bridge_args)
    await bridge.expect(r"acked seq 5:")

    await server.kill()  # mid-stream: batches in flight are lost with it
    await bridge.expect(r"disconnected")
    server = await start_server_process()
    await bridge.expect(r"connected to \S+; \d+ unacked frames to send")
    await bridge.expect(r"acked seq \d+:")

    await bridge.kill()  # mid-stream again, this time the phone
    async with httpx.AsyncClient(base_url=url, headers=service, timeout=10) as http:
        change = {"state": "stressed", "mood": "anxious", "energy": 40,
                  "image_url": f"{url}/debug/static/avatar.svg"}  # fmt: skip
        assert (await http.post("/v1/demo/users/alice/state", json=change)).status_code == 200
        bridge = await spawn("bridge", *bridge_args)
        assert await bridge.wait(limit_s=60) == 0, bridge.output()

        exported = (await http.get("/v1/users/alice/export")).json()
        state = (await http.get("/v1/users/alice/state")).json()

    stored = Counter(key(f) for f in exported["frames"])
    assert set(stored) == {key(f) for f in source}
    assert max(stored.values()) == 1
    by_key = {key(f): f for f in exported["frames"]}
    assert all(by_key[key(f)]["hr"] == f["hr"] for f in source)
    assert any("frames to send" in line and not line.endswith(" 0 unacked frames to send")
               for line in bridge.lines)  # fmt: skip

    shown = await watch.expect(rf"shown v={state['version']} hash={state['state_hash']} ")
    assert "state=stressed mood=anxious" in shown.string
    assert "image_bytes=0" not in shown.string  # the avatar was downloaded once it changed
    haptics = [orjson.loads(line) for line in (tmp_path / "haptics.jsonl").read_bytes().split()]
    assert haptics[-1]["state_hash"] == state["state_hash"]


async def test_bridge_stops_with_exit_code_3_when_the_token_is_refused(
    tmp_path: Path, spawn: Callable[..., Any], start_server_process: Callable[..., Any],
    server_port: int,
) -> None:  # fmt: skip
    await start_server_process()
    expired = token("alice", "phone", ttl=60, now=time.time() - 3600)
    for bad in (expired, token("alice", "phone")[:-4] + "AAAA"):
        bridge: Child = await spawn(
            "bridge", "bridge", "--server", f"http://127.0.0.1:{server_port}", "--token", bad,
            "--source", "scenario", "--journal", str(tmp_path / "j" / "alice.journal"),
        )  # fmt: skip
        assert await bridge.wait() == 3
        assert any("HTTP 401" in line and "check the token" in line for line in bridge.lines)
