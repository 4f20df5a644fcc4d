"""A Redis restart and a DynamoDB pause under 100 devices streaming across three nodes.

Fifty users each have a watch on one node's WebSocket, streaming frames (acked once
durable), and a phone on another node's; a third node commits a new version of every user
while the service is out. Each test runs on services of its own (a private redis-server or
DynamoDB Local, see ``tests/services.py``), so breaking them disturbs no other test. After
recovery, no acked frame is missing from the user's export, and every device holds its
user's newest committed version within :data:`CONVERGE_S` seconds (the time it took is
printed).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest

from brain.model import Frame
from brain.scenarios import generate
from tests.cluster.conftest import ClusterOn
from tests.cluster.devices import Device, Fleet
from tests.cluster.nodes import Cluster, eventually, stored_keys
from tests.conftest import auth, token
from tests.services import FAKE_AWS_ENV, DynamoDBProcess, RedisProcess, free_port

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.dynamodb]

USERS = 50
CONVERGE_S = 10.0
OUTAGE_S = 4.0
"""How long the service stays out while the devices stream (bounded: the acks wait)."""
MIN = 60_000


@pytest.fixture
async def private_dynamodb(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[DynamoDBProcess]:
    """A DynamoDB Local of this test only (fake AWS credentials set), stopped at its end."""
    for name, value in FAKE_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    workdir = tmp_path / "dynamodb"
    workdir.mkdir()
    dynamodb = DynamoDBProcess(free_port(), workdir)
    await dynamodb.start()
    try:
        yield dynamodb
    finally:
        await dynamodb.stop()


def users(tag: str) -> list[str]:
    return [f"{tag}-{i}" for i in range(USERS)]


def spread(cluster: Cluster, names: list[str]) -> tuple[Fleet, dict[str, Device]]:
    """A watch of each user on node i % 3 and a phone on node (i + 1) % 3."""
    urls = [node.ws_url for node in cluster.nodes]
    watches: dict[str, Device] = {}
    devices: list[Device] = []
    for i, user in enumerate(names):
        watch = Device(user, "watch", token(user, "watch"), urls, home=i)
        phone = Device(user, "phone", token(user, "phone"), urls, home=i + 1)
        watches[user] = watch
        devices += [watch, phone]
    return Fleet(devices), watches


def minute_of(user_index: int, minute: int) -> list[Frame]:
    """One back-dated minute of a watch's frames (``minute`` minutes ago counts down)."""
    start = int(time.time()) * 1000 - minute * MIN
    return generate("calm", start_ms=start, minutes=1, device="watch", seed=user_index, every_s=15)


async def stream(watches: Mapping[str, Device], minute: int, within: float = 30.0) -> None:
    """Every watch sends one minute of frames; returns once all are acked."""
    await asyncio.gather(
        *(w.send(minute_of(i, minute), within) for i, w in enumerate(watches.values()))
    )


async def commit_all(cluster: Cluster, names: list[str], energy: int) -> None:
    """Commit a new version of every user through the third node of each (demo route)."""
    async with cluster.nodes[2].http() as http:

        async def one(user: str) -> None:
            answer = await http.post(
                f"/v1/demo/users/{user}/state",
                json={"reasoning": f"commit {energy}", "force": True},  # no avatar saga
                headers=auth(user, "service"),
                timeout=30,
            )
            assert answer.status_code == 200, answer.text

        await asyncio.gather(*(one(u) for u in names))


async def committed(cluster: Cluster, names: list[str]) -> dict[str, int]:
    """Each user's newest committed version, read from the store."""
    states = await asyncio.gather(*(cluster.store.get_state(u) for u in names))
    return {u: (s.version if s else 0) for u, s in zip(names, states, strict=True)}


async def converge(cluster: Cluster, fleet: Fleet, names: list[str], within: float) -> float:
    """Seconds until every device holds its user's newest committed version."""

    async def caught_up() -> bool:
        return not fleet.behind(await committed(cluster, names))

    return await eventually(caught_up, within=within)


async def lost_frames(cluster: Cluster, watches: Mapping[str, Device]) -> dict[str, int]:
    """Per user, how many acked frames are not in the export (read through node 0)."""
    lost: dict[str, int] = {}
    for user, watch in watches.items():
        missing = {f.key for f in watch.acked} - await stored_keys(cluster.nodes[0], user)
        if missing:
            lost[user] = len(missing)
    return lost


async def test_a_redis_restart_loses_no_acked_frame_and_devices_converge(
    cluster_on: ClusterOn, redis_process: RedisProcess, dynamodb_local: str
) -> None:
    names = users("redis")
    async with cluster_on(broker=redis_process.url, dynamodb=dynamodb_local) as cluster:
        fleet, watches = spread(cluster, names)
        await fleet.connect()
        try:
            await stream(watches, minute=6)
            await commit_all(cluster, names, energy=10)
            await converge(cluster, fleet, names, within=CONVERGE_S)

            await redis_process.stop()
            await stream(watches, minute=5)  # acked: the store is up
            await commit_all(cluster, names, energy=20)  # deltas the broker cannot take
            await redis_process.start()
            took = await converge(cluster, fleet, names, within=CONVERGE_S)
            assert not any(d.reconnects for d in fleet.devices), "a node dropped devices"
            await stream(watches, minute=4)
            lost = await lost_frames(cluster, watches)
            latest = await committed(cluster, names)
        finally:
            await fleet.close()
    print(f"\nRedis restart: {len(fleet.devices)} devices converged {took:.2f} s after it")
    assert not lost, lost
    assert all(v >= 2 for v in latest.values()), latest
    assert all(len(w.acked) == 12 for w in watches.values())


async def test_a_dynamodb_pause_loses_no_acked_frame_and_devices_converge(
    cluster_on: ClusterOn, private_dynamodb: DynamoDBProcess, redis_server: str
) -> None:
    names = users("dynamodb")
    async with cluster_on(broker=redis_server, dynamodb=private_dynamodb.endpoint) as cluster:
        fleet, watches = spread(cluster, names)
        await fleet.connect()
        try:
            await stream(watches, minute=6)
            await commit_all(cluster, names, energy=10)
            await converge(cluster, fleet, names, within=CONVERGE_S)

            private_dynamodb.pause()
            try:
                # Frames and commits go in while the store hangs; neither is answered yet.
                sending = asyncio.create_task(stream(watches, minute=5, within=60))
                committing = asyncio.create_task(commit_all(cluster, names, energy=20))
                done, _ = await asyncio.wait({sending, committing}, timeout=OUTAGE_S)
                assert not done, "answered while the store was paused"
            finally:
                private_dynamodb.resume()
            resumed = time.monotonic()
            async with asyncio.timeout(CONVERGE_S):
                await asyncio.gather(sending, committing)
            await converge(cluster, fleet, names, within=CONVERGE_S)
            took = time.monotonic() - resumed
            assert took < CONVERGE_S
            await stream(watches, minute=4)
            lost = await lost_frames(cluster, watches)
            latest = await committed(cluster, names)
        finally:
            await fleet.close()
    print(f"\nDynamoDB pause: {len(fleet.devices)} devices converged {took:.2f} s after it")
    assert not lost, lost
    assert all(v >= 2 for v in latest.values()), latest
    assert all(len(w.acked) == 12 for w in watches.values())
