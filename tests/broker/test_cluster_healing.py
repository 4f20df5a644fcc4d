"""Two server nodes through a Redis that is stopped and started again: devices catch up by
version, commits never fail for it, and the avatar saga still runs.

The devices here follow the protocol as the phone bridge does (``clients.bridge.phonestate``):
apply a delta made for their version, ask for a snapshot (``hello`` with ``since``) on a gap.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection

from clients.bridge.phonestate import Applied, PhoneState
from server.app import Stage
from server.avatar.stage import avatar_stage
from server.broker.memory import MemoryBroker
from server.broker.redis import RedisBroker
from server.settings import Settings
from server.store.base import UserState
from server.store.sqlite import SQLiteStore
from tests.broker.conftest import RedisProcess, eventually, quick_broker
from tests.conftest import LiveServer, auth, recv, send, start_server


@asynccontextmanager
async def node(
    settings: Settings, broker: RedisBroker | MemoryBroker, stages: Sequence[Stage] = ()
) -> AsyncIterator[LiveServer]:
    """A server on the shared SQLite file of ``settings``, with ``broker``."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    async with start_server(
        settings, store=SQLiteStore(settings.sqlite_path), broker=broker, stages=stages
    ) as live:
        yield live


class Device:
    """A phone on one node, keeping its state by version as the bridge does."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.state = PhoneState()
        self.snapshots_asked = 0
        self.applied: list[int] = []

    @classmethod
    async def on(cls, live: LiveServer, user: str) -> Device:
        device = cls(await live.connect(user, hello=False))
        await send(device.ws, {"op": "hello", "client": "test"})
        device.state.apply_snapshot(await recv(device.ws))
        return device

    async def until(self, version: int, within: float = 10) -> None:
        """Read and apply messages until the device shows ``version`` or a later one (the
        clip's commit may follow the image's)."""
        async with asyncio.timeout(within):
            while self.state.version < version:
                await self.step(within)

    async def step(self, within: float = 5) -> dict[str, Any]:
        message = await recv(self.ws, within)
        if message["op"] == "snapshot":
            self.state.apply_snapshot(message)
        elif message["op"] == "delta":
            applied = self.state.apply_delta(message)
            if applied is Applied.APPLIED:
                self.applied.append(message["version"])
            elif applied is Applied.GAP:
                self.snapshots_asked += 1
                await send(self.ws, {"op": "hello", "client": "test", "since": self.state.version})
        return message


async def commit(http: httpx.AsyncClient, user: str, **changes: Any) -> dict[str, Any]:
    answer = await http.post(
        f"/v1/demo/users/{user}/state", json=changes, headers=auth(user, "service")
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def subscribed(http: httpx.AsyncClient, *devices: Device, user: str = "alice") -> int:
    """Commit until every device has seen a delta (its node's SUBSCRIBE is acknowledged
    asynchronously); the version they all show."""
    async with asyncio.timeout(10):
        while True:
            version = (await commit(http, user, state="stressed", force=True))["version"]
            try:
                for device in devices:
                    await device.until(version, within=0.3)
            except TimeoutError:
                continue
            return int(version)


async def settled(live: LiveServer, user: str, beyond: int = 0) -> UserState:
    """The user's state once a version above ``beyond`` has its avatar ready."""
    async with asyncio.timeout(20):
        while True:
            state = await live.services.state.current(user)
            if state.version > beyond and state.avatar_status == "ready":
                return state
            await asyncio.sleep(0.05)  # the poll interval of a deadline loop


async def test_a_commit_while_redis_is_down_succeeds_and_reaches_the_other_node_after(
    settings: Settings, redis_process: RedisProcess
) -> None:
    a_broker, b_broker = quick_broker(redis_process.url), quick_broker(redis_process.url)
    async with (
        node(settings, a_broker, stages=[avatar_stage]) as a,
        node(settings, b_broker) as b,
        a.http() as http,
    ):
        phone = await Device.on(b, "alice")
        await subscribed(http, phone)
        before = await settled(a, "alice")  # the saga of the first state drew its image
        await phone.until(before.version)
        await redis_process.stop()
        await eventually(lambda: not (a_broker.health().connected or b_broker.health().connected))

        answer = await commit(http, "alice", state="calm", mood="happy")
        assert answer["committed"] and answer["state"] == "calm"
        metrics = a.app.state.metrics
        assert metrics.publish_failures.labels("delta")._value.get() >= 1
        # The avatar saga started all the same: it draws and commits the new image.
        current = await settled(a, "alice", beyond=answer["version"])
        assert current.image_url != before.image_url

        await redis_process.start()
        await phone.until(current.version)
        assert phone.state.fields["state"] == "calm"
        assert phone.state.fields["image_url"] == current.image_url
        # Node B's resync may have been first; node A re-publishes all the same.
        await eventually(lambda: metrics.repairs.labels("republish")._value.get() >= 1)
        await phone.ws.close()


async def test_devices_on_two_nodes_get_what_was_committed_during_an_outage_on_the_same_socket(
    settings: Settings, redis_process: RedisProcess
) -> None:
    a_broker, b_broker = quick_broker(redis_process.url), quick_broker(redis_process.url)
    async with node(settings, a_broker) as a, node(settings, b_broker) as b, a.http() as http:
        on_a, on_b = await Device.on(a, "alice"), await Device.on(b, "alice")
        await subscribed(http, on_a, on_b)
        await redis_process.stop()
        await eventually(lambda: not (a_broker.health().connected or b_broker.health().connected))
        for mood in ("tired", "anxious", "happy"):
            last = await commit(http, "alice", mood=mood)

        await redis_process.start()
        async with asyncio.timeout(5):  # "within a few seconds after Redis is back"
            await asyncio.gather(on_a.until(last["version"]), on_b.until(last["version"]))
        for device in (on_a, on_b):
            assert device.state.state_hash == last["state_hash"]
            assert device.state.fields["mood"] == "happy"
            assert device.ws.close_code is None  # the same socket all along
            await device.ws.close()


async def test_after_a_reconnect_devices_resync_by_version_ignore_apply_or_ask_for_a_snapshot(
    settings: Settings, redis_process: RedisProcess
) -> None:
    """Commits that never reached Redis (written by a node outside it) reach the devices of
    a node through its resync alone: at the current version nothing, one behind the delta
    applies, further behind a gap and a snapshot. A long-poll wakes up too."""
    b_broker = quick_broker(redis_process.url)
    writer = replace(settings)  # same store, in-memory broker: publishes reach no other node
    async with node(writer, MemoryBroker()) as a, node(settings, b_broker) as b, a.http() as http:
        v1 = (await commit(http, "alice", state="stressed"))["version"]
        far = await Device.on(b, "alice")  # at v1
        await redis_process.stop()
        await eventually(lambda: not b_broker.health().connected)
        await commit(http, "alice", mood="tired")
        near = await Device.on(b, "alice")  # at v1 + 1
        async with b.http() as b_http:
            poll = asyncio.create_task(
                b_http.get(
                    f"/v1/users/alice/state?wait=20&since={v1 + 1}", headers=auth("alice", "watch")
                )
            )
            await eventually(lambda: b.app.state.metrics.longpolls._value.get() == 1)
            current = await commit(http, "alice", mood="happy")
            level = await Device.on(b, "alice")  # at v1 + 2
            assert (far.state.version, near.state.version, level.state.version) == (
                v1,
                v1 + 1,
                v1 + 2,
            )
            try:
                await redis_process.start()
                await asyncio.gather(far.until(current["version"]), near.until(current["version"]))
                polled = await asyncio.wait_for(poll, 10)
            finally:
                poll.cancel()
        assert near.applied == [current["version"]] and near.snapshots_asked == 0
        assert far.applied == [] and far.snapshots_asked == 1
        # The device already at the version was offered nothing: a ping is answered first.
        await send(level.ws, {"op": "ping", "t": 1})
        assert (await recv(level.ws))["op"] == "pong"
        assert polled.status_code == 200 and polled.json()["version"] == current["version"]
        assert b.app.state.metrics.repairs.labels("resync")._value.get() >= 1
        for device in (far, near, level):
            await device.ws.close()
