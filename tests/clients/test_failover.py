"""Clients fail over between nodes: two real server processes sharing a Redis broker and a
store, and a bridge that must move to the live node within seconds and lose nothing.

The nodes share the store through one SQLite file (WAL mode, two processes on one machine)
and deltas through a real ``redis-server``; they are ``companion serve`` children started
with the same settings, as two tasks behind a load balancer would be.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.clients.conftest import READY_LINE, Child, free_port
from tests.clients.test_bridge import key, write_source
from tests.conftest import token

FAILOVER_LIMIT_S = 5.0
"""How soon after its node dies the bridge must be streaming to the other one."""


async def start_node(spawn: Callable[..., Any], name: str, port: int, broker: str) -> Child:
    node: Child = await spawn(
        name, "serve", "--host", "127.0.0.1", "--port", str(port),
        extra_env={"COMPANION_BROKER": broker},
    )  # fmt: skip
    await node.expect(re.escape(READY_LINE), limit_s=30)
    return node


async def test_bridge_moves_to_a_live_node_within_seconds_and_loses_no_acked_frame(
    tmp_path: Path, spawn: Callable[..., Any], redis_server: str
) -> None:
    source = write_source(tmp_path / "frames.jsonl")
    port_a, port_b = free_port(), free_port()
    url_a, url_b = f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}"
    node_a = await start_node(spawn, "node-a", port_a, redis_server)
    bridge: Child = await spawn(
        "bridge", "bridge", "--server", f"{url_a},{url_b}", "--token", token("alice", "phone"),
        "--source", "file", "--file", str(tmp_path / "frames.jsonl"), "--rate", "40",
        "--batch", "10", "--journal", str(tmp_path / "phone" / "alice.journal"),
        "--exit-when-done", "-v",
    )  # fmt: skip
    # B is not up yet, so wherever the bridge starts in its list, it ends up streaming to A.
    await bridge.expect(rf"connected to {re.escape(url_a)};", limit_s=30)
    node_b = await start_node(spawn, "node-b", port_b, redis_server)
    await bridge.expect(r"acked seq 5:")

    await node_a.kill()  # no goodbye: batches in flight die with the node
    killed_at = time.monotonic()
    await bridge.expect(rf"connected to {re.escape(url_b)};", limit_s=FAILOVER_LIMIT_S)
    moved_after = time.monotonic() - killed_at
    await bridge.expect(r"acked seq \d+:", limit_s=FAILOVER_LIMIT_S)
    assert await bridge.wait(limit_s=60) == 0, bridge.output()

    service = {"Authorization": f"Bearer {token('ops', 'service')}"}
    async with httpx.AsyncClient(base_url=url_b, headers=service, timeout=10) as http:
        exported = (await http.get("/v1/users/alice/export")).json()
    stored = Counter(key(f) for f in exported["frames"])
    assert set(stored) == {key(f) for f in source}  # every journaled frame reached the store
    assert max(stored.values()) == 1  # and once: resent frames were not stored twice
    assert moved_after < FAILOVER_LIMIT_S
    assert node_b.process.returncode is None
