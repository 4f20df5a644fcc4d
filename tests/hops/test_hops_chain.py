"""The whole chain on real sockets: server ⇄ WebSocket ⇄ phone bridge ⇄ TCP ⇄ simulated watch.

A commit reaches the watch through the bridge; the watch's ``shown`` comes back as the
bridge's ``seen`` and the devices route says the watch is up to date; a command reaches the
watch with its delta and the watch's answer is the recorded outcome. The last test measures
the time from commit to "seen on the watch" as the server records it (both ends on the
server's clock) and prints p50/p99 (docs/benchmarks.md quotes it).
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from clients.bridge.bridge import Bridge
from clients.bridge.journal import Journal
from clients.bridge.watchlink import TcpWatchLink
from clients.connect.access import endpoints
from clients.watch.sim import SimulatedWatch
from tests.conftest import LiveServer, token
from tests.hops.conftest import commands_of, devices_of
from tests.server.conftest import commit

LATENCY_COMMITS = 40


class NoFrames:
    """A frame source with nothing to send: these tests are about the way back."""

    async def chunks(self, cursor: Any) -> AsyncIterator[tuple[list[dict[str, Any]], Any]]:
        return
        yield  # an async generator that yields nothing


@asynccontextmanager
async def paired(
    live: LiveServer, tmp_path: Path, *, answer: str = "done"
) -> AsyncIterator[tuple[Bridge, SimulatedWatch]]:
    """A simulated watch on a loopback port and alice's bridge paired with it, both stopped
    at the end of the block."""
    lines: list[str] = []
    watch = SimulatedWatch(None, out=lines.append, answer=answer, answer_after=0.0)
    server = await asyncio.start_server(watch.serve_link, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    journal = Journal(tmp_path / "bridge.journal")
    journal.open()
    bridge = Bridge(
        endpoints(live.url),
        token("alice", "phone"),
        NoFrames(),
        journal,
        link=TcpWatchLink("127.0.0.1", port),
        watch_device="watch-1",
    )
    run = asyncio.create_task(bridge.run())
    try:
        yield bridge, watch
    finally:
        bridge.stop()
        await asyncio.wait_for(run, 10)
        journal.close()
        server.close()
        await server.wait_closed()
        await watch.close()


async def watch_seen(live: LiveServer, version: int, within: float = 10.0) -> dict[str, Any]:
    """Poll the devices route until the watch has shown ``version``; its entry."""
    async with live.http() as client, asyncio.timeout(within):
        while True:
            devices = (await devices_of(client, "alice"))["devices"]
            found = [d for d in devices if d["device"] == "watch-1"]
            if found and found[0]["seen_version"] >= version:
                return found[0]
            await asyncio.sleep(0.01)  # polling a condition under a deadline


async def test_a_commit_is_seen_on_the_watch_and_the_phone(
    hops_server: LiveServer, tmp_path: Path
) -> None:
    async with paired(hops_server, tmp_path) as (_, watch), hops_server.http() as client:
        body = await commit(client, "alice", mood="happy")
        seen = await watch_seen(hops_server, body["version"])
        devices = {d["device"]: d for d in (await devices_of(client, "alice"))["devices"]}
    assert watch.state["version"] == body["version"]
    assert seen["kind"] == "watch" and seen["behind"] == 0
    assert devices["phone"]["kind"] == "phone"
    assert devices["phone"]["seen_version"] == body["version"]


async def test_a_command_reaches_the_watch_and_its_answer_is_recorded_once(
    hops_server: LiveServer, tmp_path: Path
) -> None:
    async with paired(hops_server, tmp_path) as (bridge, watch), hops_server.http() as client:
        body = await commit(client, "alice", actions=["downgrade_workout"])
        async with asyncio.timeout(10):
            while True:
                (command,) = await commands_of(client, "alice")
                if command["outcome"] != "pending" and not bridge._results:
                    break
                await asyncio.sleep(0.01)  # polling a condition under a deadline
    assert command["version"] == body["version"]
    assert command["kind"] == "downgrade_workout"
    assert (command["outcome"], command["device"]) == ("done", "watch-1")
    assert watch.answers == {command["id"]: "done"}
    assert bridge.stats["command_results_acked"] == 1


async def test_time_from_commit_to_seen_on_the_watch(
    hops_server: LiveServer, tmp_path: Path
) -> None:
    latencies: list[float] = []
    async with paired(hops_server, tmp_path), hops_server.http() as client:
        for n in range(LATENCY_COMMITS):
            body = await commit(client, "alice", energy=10 + n)
            seen = await watch_seen(hops_server, body["version"])
            latencies.append(seen["seen_at"] - body["updated_at"])
    cuts = statistics.quantiles(latencies, n=100)
    p50, p99 = statistics.median(latencies), cuts[98]
    figure = f"p50 {p50:.1f} ms, p99 {p99:.1f} ms"
    print(f"\ncommit -> seen on the watch, {LATENCY_COMMITS} commits: {figure}")
    assert min(latencies) >= 0
    assert p99 < 1000, latencies
