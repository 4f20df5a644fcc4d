"""``companion serve`` as a process, as production runs it (uvloop, its own logging): what
its log holds after hostile and ordinary traffic, and the start-up dependency check."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import httpx
import orjson
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Opcode

from server.runner import TESTED_VERSIONS
from tests.conftest import SECRET, token
from tests.edge.conftest import Raw, frame, upgrade_request
from tests.server.test_durability import LISTENING, free_port

ROOT = Path(__file__).resolve().parents[2]
SENSOR_VALUE = 173.25
"""A heart rate no other line of the log could contain by chance."""


def environment(data_dir: Path, **more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPANION_")}
    env.update(COMPANION_DATA_DIR=str(data_dir), COMPANION_SECRET=SECRET, PYTHONPATH=str(ROOT))
    env.update(more)
    return env


@asynccontextmanager
async def serving(data_dir: Path, port: int, log: list[str]) -> AsyncIterator[None]:
    """``companion serve`` at debug level; every line of its stderr and stdout (uvicorn's
    access log) goes to ``log``; stopped with SIGTERM (graceful) at the end of the block."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server.cli",
        "serve",
        "--port",
        str(port),
        cwd=ROOT,
        env=environment(data_dir, COMPANION_LOG_LEVEL="debug"),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    stderr = process.stdout
    try:
        async with asyncio.timeout(30):
            while LISTENING not in (line := (await stderr.readline()).decode()):
                assert line, "server exited before startup:\n" + "".join(log)
                log.append(line)

        async def drain() -> None:
            while line := await stderr.readline():
                log.append(line.decode())

        drainer = asyncio.create_task(drain())
        yield
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            await process.wait()
            await drainer
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_the_log_holds_no_token_sensor_value_traceback_or_error(tmp_path: Path) -> None:
    port = free_port()
    url, ws_url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/v1/ws"
    phone, service, forged = token("alice"), token("ops", "service"), token("alice")[:-4] + "AAAA"
    log: list[str] = []
    async with serving(tmp_path / "data", port, log):
        async with websockets.connect(f"{ws_url}?token={phone}") as ws:
            await ws.send(orjson.dumps({"op": "hello", "client": "log-test"}).decode())
            await ws.recv()
            ts = int(time.time() * 1000) - 5_000
            frames = [{"ts": ts, "hr": SENSOR_VALUE}, {"ts": ts + 1, "hr": 999.5}]
            await ws.send(orjson.dumps({"op": "frames", "seq": 1, "frames": frames}).decode())
            await ws.recv()
        for credentials in (forged, "garbage"):
            with suppress(InvalidStatus):
                await websockets.connect(f"{ws_url}?token={credentials}")
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            assert (await client.get(f"/healthz?token={service}")).status_code == 200
            await client.get(f"/v1/users/alice/state?token={phone}")
        raw = await Raw.open_url(url)
        try:
            assert await raw.upgrade(phone) == 101
            await raw.send(frame(Opcode.TEXT, b'{"op":"ping","t":"\xff"}'))
            assert await raw.close_code() == 1007
        finally:
            raw.close()
        raw = await Raw.open_url(url)
        try:
            await raw.send(upgrade_request(phone, version="1.0"))
            assert (await raw.response_head())[0] == 400
        finally:
            raw.close()
        with suppress(ConnectionClosed, OSError, InvalidStatus):
            async with websockets.connect(ws_url, additional_headers={"Authorization": "x"}):
                pass
    text = "".join(log)
    assert 'GET /healthz HTTP/1.1" 200' in text, text
    for secret in (phone, service, forged, SECRET, str(SENSOR_VALUE), "999.5"):
        assert secret not in text
    assert "Traceback" not in text, text
    assert not re.search(r"\bERROR\b", text), text


async def test_an_untested_dependency_version_refuses_to_start(tmp_path: Path) -> None:
    fake = tmp_path / "site" / "uvicorn-0.35.0.dist-info"
    fake.mkdir(parents=True)
    (fake / "METADATA").write_text("Metadata-Version: 2.1\nName: uvicorn\nVersion: 0.35.0\n")
    env = environment(tmp_path / "data", PYTHONPATH=f"{fake.parent}{os.pathsep}{ROOT}")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server.cli",
        "serve",
        "--port",
        str(free_port()),
        cwd=ROOT,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        _, stderr = await process.communicate()
    assert process.returncode == 2
    assert "uvicorn 0.35.0 is not a tested version (>=0.54,<0.55)" in stderr.decode()


def test_the_pyproject_bounds_are_the_tested_versions() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    bounds: dict[str, tuple[str, str]] = {}
    for requirement in project["project"]["dependencies"]:
        match = re.fullmatch(r"([A-Za-z0-9_-]+)(?:\[[^\]]*\])?>=([\d.]+),<([\d.]+)", requirement)
        if match is not None:
            bounds[match.group(1)] = (match.group(2), match.group(3))
    for name, tested in TESTED_VERSIONS.items():
        assert bounds.get(name) == tested, name
