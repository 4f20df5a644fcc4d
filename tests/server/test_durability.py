"""Durability against a real server process: ack after commit across a SIGKILL, and a
graceful SIGTERM that closes phones with 1012 after storing what was acked."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.conftest import SECRET, auth, recv_op, send
from tests.server.conftest import close_code, frame, now_ms

pytestmark = pytest.mark.slow  # starts server or writer processes

ROOT = Path(__file__).resolve().parents[2]
STARTED = "Application startup complete."
LISTENING = "Uvicorn running on"
"""uvicorn logs startup before it binds the socket; ready means both lines were seen."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ServerProcess:
    process: asyncio.subprocess.Process
    port: int
    log: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"


@asynccontextmanager
async def server_process(data_dir: Path, port: int) -> AsyncIterator[ServerProcess]:
    """``companion serve`` in a subprocess, ready when uvicorn says so on stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPANION_")}
    env.update(
        COMPANION_DATA_DIR=str(data_dir),
        COMPANION_SECRET=SECRET,
        COMPANION_LOG_LEVEL="info",
        # The test streams hundreds of batches at once; the rate limit is not under test.
        COMPANION_RATE_PER_S="10000",
        COMPANION_RATE_BURST="10000",
        PYTHONPATH=str(ROOT),
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server.cli",
        "serve",
        "--port",
        str(port),
        cwd=ROOT,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    server = ServerProcess(process, port)
    assert process.stderr is not None
    stderr = process.stderr
    try:
        async with asyncio.timeout(30):
            while True:
                line = (await stderr.readline()).decode()
                assert line, "server exited before startup:\n" + "".join(server.log)
                server.log.append(line)
                if LISTENING in line:
                    assert any(STARTED in seen for seen in server.log)
                    break

        async def drain() -> None:
            while line := await stderr.readline():
                server.log.append(line.decode())

        drainer = asyncio.create_task(drain())
        try:
            yield server
        finally:
            if process.returncode is None:
                process.kill()
            await process.wait()
            await drainer
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def batch(seq: int, t0: int, size: int = 20) -> dict[str, Any]:
    return {
        "op": "frames",
        "seq": seq,
        "frames": [frame(t0 + seq * 1000 + i, hr=60 + i) for i in range(size)],
    }


async def export(server: ServerProcess, user: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        response = await client.get(f"/v1/users/{user}/export", headers=auth(user, "service"))
    assert response.status_code == 200
    frames: list[dict[str, Any]] = response.json()["frames"]
    return frames


async def test_acked_frames_survive_sigkill_and_resends_are_not_duplicated(
    tmp_path: Path,
) -> None:
    port = free_port()
    t0 = now_ms() - 3_600_000
    batches = {seq: batch(seq, t0) for seq in range(1, 301)}
    acked: set[int] = set()
    async with server_process(tmp_path, port) as server:
        ws = await websockets.connect(server.ws_url, additional_headers=auth("alice"))
        try:
            await send(ws, {"op": "hello", "client": "durability"})
            await recv_op(ws, "snapshot")

            async def stream() -> None:
                with suppress(ConnectionClosed):
                    for message in batches.values():
                        await ws.send(orjson.dumps(message).decode())

            sender = asyncio.create_task(stream())
            with suppress(ConnectionClosed):
                async with asyncio.timeout(20):
                    while True:
                        message = orjson.loads(await ws.recv())
                        if message["op"] == "ack":
                            acked.add(message["seq"])
                            if len(acked) == 10:
                                server.process.send_signal(signal.SIGKILL)
            await sender
        finally:
            await ws.close()
        assert await server.process.wait() == -signal.SIGKILL
    assert len(acked) >= 10
    assert len(acked) < len(batches), "killed too late to be mid-stream"

    async with server_process(tmp_path, port) as server:
        # What was acked is there before anything is resent.
        before = await export(server, "alice")
        keys_before = {(f["ts"], f["device"]) for f in before}
        for seq in acked:
            for f in batches[seq]["frames"]:
                assert (f["ts"], f["device"]) in keys_before
        async with websockets.connect(server.ws_url, additional_headers=auth("alice")) as ws:
            for message in batches.values():  # every batch, acked or not
                await send(ws, message)
                ack = await recv_op(ws, "ack")
                assert (ack["seq"], ack["accepted"]) == (message["seq"], 20)
        stored = await export(server, "alice")
    counts = Counter((f["ts"], f["device"]) for f in stored)
    assert max(counts.values()) == 1
    expected = {(f["ts"], f["device"]) for b in batches.values() for f in b["frames"]}
    assert set(counts) == expected


async def test_sigterm_closes_phones_with_1012_and_keeps_acked_frames(tmp_path: Path) -> None:
    port = free_port()
    t0 = now_ms() - 60_000
    async with server_process(tmp_path, port) as server:
        ws = await websockets.connect(server.ws_url, additional_headers=auth("alice"))
        try:
            await send(ws, {"op": "hello", "client": "durability"})
            await recv_op(ws, "snapshot")
            message = batch(1, t0)
            await send(ws, message)
            assert (await recv_op(ws, "ack"))["accepted"] == 20
            server.process.send_signal(signal.SIGTERM)
            assert await close_code(ws, within=15) == 1012
        finally:
            await ws.close()
        async with asyncio.timeout(20):
            # A graceful stop is a clean exit (uvicorn's re-raised signal is absorbed).
            assert await server.process.wait() == 0
    async with server_process(tmp_path, port) as server:
        stored = await export(server, "alice")
    assert {(f["ts"], f["device"]) for f in stored} == {
        (f["ts"], f["device"]) for f in message["frames"]
    }
