"""A cluster on loopback: ``companion serve`` processes sharing one Redis and one DynamoDB.

:func:`running_cluster` starts the nodes on tables of a fresh prefix (created before the
nodes start, deleted after) of the DynamoDB at ``dynamodb`` and the broker at ``broker``:
the session's services (``tests/cluster/conftest.py``), or private ones a test restarts or
pauses (:class:`tests.services.RedisProcess`, :class:`tests.services.DynamoDBProcess`), or a
benchmark's (``bench/cluster.py``). A node is ready when uvicorn says it listens; its node id
(the owner name in Redis) is read from its log. Devices talk to nodes over real sockets: a
watch over the WebSocket (frames acked once durable), a ring over REST.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis.asyncio as aioredis
import websockets
from websockets.asyncio.client import ClientConnection

from brain.model import Frame
from server.analysis.owners import OWNER
from server.protocol import frame_to_wire
from server.store import schema
from server.store.dynamodb import DynamoDBStore
from tests.conftest import SECRET, auth
from tests.services import FAKE_AWS_ENV, free_port

ROOT = Path(__file__).resolve().parents[2]
LEASE_MS = 3000
DEBOUNCE_MS = 300
NODES = 3
LISTENING = "Uvicorn running on"
NODE_ID = re.compile(r"analysis owners: node (\w+)")
METRIC = re.compile(r"^(companion_[a-z_]+)(?:\{[^}]*\})? ([0-9.e+-]+)$", re.MULTILINE)


@dataclass
class Node:
    """One server process: its port, node id (owner name) and log."""

    name: str
    process: asyncio.subprocess.Process
    port: int
    log: list[str] = field(default_factory=list)
    node_id: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=10)

    async def metrics(self) -> dict[str, float]:
        """The node's companion_* metrics, summed over labels."""
        async with self.http() as http:
            text = (await http.get("/metrics")).text
        totals: dict[str, float] = {}
        for name, value in METRIC.findall(text):
            totals[name] = totals.get(name, 0.0) + float(value)
        return totals

    async def state(self, user_id: str) -> dict[str, Any]:
        async with self.http() as http:
            answer = await http.get(f"/v1/users/{user_id}/state", headers=auth(user_id))
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body


@dataclass
class Cluster:
    """The nodes, the Redis they share, and helpers that wait on the whole cluster."""

    nodes: list[Node]
    redis_url: str
    store: DynamoDBStore
    """The cluster's tables, opened by the test process (to read what is committed)."""

    def live(self) -> list[Node]:
        return [node for node in self.nodes if node.alive]

    async def analyses(self) -> float:
        """Analyses finished so far on the live nodes."""
        total = 0.0
        for node in self.live():
            total += (await node.metrics()).get("companion_analyses_total", 0.0)
        return total

    async def settle(self, at_least: float, within: float = 60.0) -> float:
        """Wait until the live nodes finished ``at_least`` analyses in all and none is
        pending or running, twice in a row a debounce apart (a notice still on its way
        would start a debounce in between); return the count. Polls /metrics under a
        deadline."""
        seen: float | None = None
        async with asyncio.timeout(within):
            while True:
                samples = [await n.metrics() for n in self.live()]
                done = sum(s.get("companion_analyses_total", 0.0) for s in samples)
                busy = sum(
                    s.get("companion_analysis_queue", 0.0)
                    + s.get("companion_analysis_running", 0.0)
                    for s in samples
                )
                if done >= at_least and not busy:
                    if seen == done:
                        return done
                    seen = done
                    await asyncio.sleep(DEBOUNCE_MS / 1000)
                    continue
                seen = None
                await asyncio.sleep(0.1)  # a poll interval under the deadline above

    async def owner_of(self, user_id: str) -> Node | None:
        """The node whose lease on ``user_id`` is in Redis now, if any."""
        client = aioredis.Redis.from_url(self.redis_url)
        try:
            value = await client.get(OWNER + user_id)
        finally:
            await client.aclose()
        if value is None:
            return None
        node_id = value.decode().rpartition(":")[0]
        return next((n for n in self.nodes if n.node_id == node_id), None)

    async def kill(self, node: Node) -> None:
        """SIGKILL the node's process and reap it."""
        node.process.send_signal(signal.SIGKILL)
        await node.process.wait()


async def eventually(check: Callable[[], Awaitable[bool]], within: float) -> float:
    """Poll ``check`` every 100 ms until it holds; the seconds it took. Fails after
    ``within`` seconds (TimeoutError)."""
    started = time.monotonic()
    async with asyncio.timeout(within):
        while True:
            if await check():
                return time.monotonic() - started
            await asyncio.sleep(0.1)  # a poll interval under the deadline above


@asynccontextmanager
async def node_process(name: str, env: Mapping[str, str], data_dir: Path) -> AsyncIterator[Node]:
    """``companion serve`` in a subprocess with ``env``, ready when uvicorn listens (fails
    after 60 s); stopped with SIGTERM (SIGKILL after 20 s) at the end."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server.cli",
        "serve",
        "--port",
        str(port),
        cwd=ROOT,
        env={**env, "COMPANION_DATA_DIR": str(data_dir)},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    node = Node(name, process, port)
    assert process.stderr is not None
    stderr = process.stderr
    try:
        async with asyncio.timeout(60):
            while True:
                line = (await stderr.readline()).decode()
                assert line, f"{name} exited before startup:\n" + "".join(node.log)
                node.log.append(line)
                if found := NODE_ID.search(line):
                    node.node_id = found.group(1)
                if LISTENING in line:
                    break
        assert node.node_id, f"{name} did not log its node id:\n" + "".join(node.log)

        async def drain() -> None:
            while line := await stderr.readline():
                node.log.append(line.decode())

        drainer = asyncio.create_task(drain())
        try:
            yield node
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                try:
                    async with asyncio.timeout(20):
                        await process.wait()
                except TimeoutError:
                    process.kill()
                    await process.wait()
            await drainer
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@asynccontextmanager
async def running_cluster(
    workdir: Path,
    *,
    broker: str,
    dynamodb: str,
    nodes: int = NODES,
    settings: Mapping[str, str] | None = None,
) -> AsyncIterator[Cluster]:
    """``nodes`` nodes on fresh tables of the DynamoDB at ``dynamodb`` and the broker at
    ``broker``, each node's data dir under ``workdir``; ``settings`` (``COMPANION_*``)
    override the cluster's defaults. Stopped and the tables deleted at the end."""
    prefix = f"c{uuid.uuid4().hex[:10]}-"
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPANION_")}
    env.update(FAKE_AWS_ENV)
    env.update(
        COMPANION_SECRET=SECRET,
        COMPANION_STORE="dynamodb",
        COMPANION_TABLE_PREFIX=prefix,
        COMPANION_BROKER=broker,
        COMPANION_OWNER_LEASE_MS=str(LEASE_MS),
        COMPANION_DEBOUNCE_MS=str(DEBOUNCE_MS),
        COMPANION_LOG_LEVEL="info",
        COMPANION_RATE_PER_S="10000",
        COMPANION_RATE_BURST="10000",
        AWS_ENDPOINT_URL_DYNAMODB=dynamodb,
        PYTHONPATH=str(ROOT),
    )
    env.update(settings or {})
    store = DynamoDBStore(table_prefix=prefix, region="us-east-1", endpoint_url=dynamodb)
    await store.open()
    try:
        await store.create_tables()
        async with AsyncExitStack() as stack:
            starting = [
                stack.enter_async_context(node_process(f"node-{i}", env, workdir / f"n{i}"))
                for i in range(nodes)
            ]
            started = [await each for each in starting]
            yield Cluster(started, broker, store)
    finally:
        try:
            await schema.delete_tables(store.client, prefix)
        finally:
            await store.close()


class Watch:
    """A watch on a node's WebSocket: sends frames, keeps what was acked."""

    def __init__(self, user_id: str, ws: ClientConnection, device: str) -> None:
        self.user_id = user_id
        self.ws = ws
        self.device = device
        self.seq = 0
        self.acked: list[Frame] = []

    @classmethod
    async def connect(cls, node: Node, user_id: str, device: str = "watch") -> Watch:
        ws = await websockets.connect(node.ws_url, additional_headers=auth(user_id, "watch"))
        await ws.send(orjson.dumps({"op": "hello", "client": "cluster-test"}).decode())
        return cls(user_id, ws, device)

    async def send(self, frames: list[Frame], within: float = 10.0) -> None:
        """Send ``frames`` and wait for their ack (skipping snapshots, deltas, summaries)."""
        self.seq += 1
        wire = [frame_to_wire(f) for f in frames]
        await self.ws.send(orjson.dumps({"op": "frames", "seq": self.seq, "frames": wire}).decode())
        async with asyncio.timeout(within):
            while True:
                message = orjson.loads(await self.ws.recv())
                if message["op"] == "ack" and message["seq"] == self.seq:
                    assert message["accepted"] == len(frames), message
                    self.acked.extend(frames)
                    return
                assert message["op"] != "error", message

    async def close(self) -> None:
        await self.ws.close()


async def upload(node: Node, user_id: str, frames: list[Frame]) -> None:
    """A ring's REST upload of ``frames`` (answered once they are durable)."""
    async with node.http() as http:
        answer = await http.post(
            f"/v1/users/{user_id}/frames",
            json={"frames": [frame_to_wire(f) for f in frames]},
            headers=auth(user_id, "watch"),
        )
    assert answer.status_code == 200, answer.text


async def stored_keys(node: Node, user_id: str) -> set[str]:
    """The keys (ts#device#seq) of the user's frames in the export."""
    async with node.http() as http:
        answer = await http.get(f"/v1/users/{user_id}/export", headers=auth(user_id))
    assert answer.status_code == 200, answer.text
    frames = answer.json()["frames"]
    return {
        Frame(ts=f["ts"], device=f.get("device", "unknown"), seq=f.get("seq", 0)).key
        for f in frames
    }
