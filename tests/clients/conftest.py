"""Fixtures of the client tests: child processes (server, bridge, simulated watch) on loopback.

A :class:`Child` is a ``python -m server.cli …`` process whose stdout and stderr are read
line by line into a queue by pump tasks (so a chatty child never blocks on a full pipe);
tests wait for a line with :meth:`Child.expect`, a timeout and no sleep. Every child is
stopped by the fixture that started it, through its own process handle.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.conftest import SECRET
from tests.services import redis_server

__all__ = ["redis_server"]

READY_LINE = "Application startup complete."


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago (for servers that must keep theirs)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Child:
    """One child process and the lines it printed (stdout and stderr, interleaved)."""

    def __init__(self, name: str, process: asyncio.subprocess.Process) -> None:
        self.name = name
        self.process = process
        self.lines: list[str] = []
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._open_streams = 2
        assert process.stdout is not None and process.stderr is not None
        self._pumps = [
            asyncio.create_task(self._pump(process.stdout)),
            asyncio.create_task(self._pump(process.stderr)),
        ]

    async def _pump(self, stream: asyncio.StreamReader) -> None:
        while raw := await stream.readline():
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            self._queue.put_nowait(line)
        self._open_streams -= 1
        if not self._open_streams:
            self._queue.put_nowait(None)

    async def expect(self, pattern: str, limit_s: float = 20.0) -> re.Match[str]:
        """The first line from now on that matches ``pattern`` (a regex).

        Fails the test after ``limit_s`` seconds or when the child's output ends first.
        """
        regex = re.compile(pattern)
        try:
            async with asyncio.timeout(limit_s):
                while True:
                    line = await self._queue.get()
                    if line is None:
                        self._queue.put_nowait(None)
                        pytest.fail(f"{self.name} ended before {pattern!r}:\n{self.output()}")
                    if match := regex.search(line):
                        return match
        except TimeoutError:
            pytest.fail(f"{self.name}: no {pattern!r} in {limit_s}s:\n{self.output()}")

    def output(self, last: int = 40) -> str:
        return "\n".join(self.lines[-last:])

    async def wait(self, limit_s: float = 30.0) -> int:
        """The exit code; fails the test if the child does not exit within ``limit_s``."""
        try:
            async with asyncio.timeout(limit_s):
                code = await self.process.wait()
        except TimeoutError:
            pytest.fail(f"{self.name} did not exit in {limit_s}s:\n{self.output()}")
        await asyncio.gather(*self._pumps)
        return code

    async def kill(self) -> None:
        """SIGKILL: no chance to flush or close anything."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
        await self.wait()

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not go within 15 s."""
        if self.process.returncode is None:
            self.process.terminate()
            try:
                async with asyncio.timeout(15):
                    await self.process.wait()
            except TimeoutError:
                self.process.kill()
        await self.wait()


Spawn = Callable[..., "asyncio.Future[Child] | object"]


@pytest.fixture
async def spawn(tmp_path: Path) -> AsyncIterator[Callable[..., object]]:
    """Start ``python -m server.cli ARGS…`` children (``extra_env`` adds settings); every one
    is stopped at the end."""
    children: list[Child] = []
    env = {
        **os.environ,
        "COMPANION_DATA_DIR": str(tmp_path / "data"),
        "COMPANION_SECRET": SECRET,
        "COMPANION_LOG_LEVEL": "info",
        "PYTHONUNBUFFERED": "1",
    }

    async def start(
        name: str, *args: str, stdin: bool = False, extra_env: dict[str, str] | None = None
    ) -> Child:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "server.cli",
            *args,
            stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**env, **(extra_env or {})},
        )
        child = Child(name, process)
        children.append(child)
        return child

    yield start
    for child in reversed(children):
        await child.stop()


@pytest.fixture
def server_port() -> int:
    return free_port()


@pytest.fixture
def start_server_process(spawn: Callable[..., object], server_port: int) -> Callable[..., object]:
    """Start ``companion serve`` on ``server_port`` and wait for uvicorn's readiness line."""

    async def start() -> Child:
        child: Child = await spawn(  # type: ignore[misc]
            "server", "serve", "--host", "127.0.0.1", "--port", str(server_port)
        )
        await child.expect(re.escape(READY_LINE), limit_s=30)
        return child

    return start
