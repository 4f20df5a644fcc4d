"""Fixtures of the broker tests: the session's redis-server, and one a test may break.

``redis_process`` is a redis-server of its own for one test, on a fixed loopback port, that
the test stops and starts again on the same port (a restart), or pauses with SIGSTOP (a hung
Redis, as in a failover). It is stopped at the end of the test in any case.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from brain.backoff import Backoff
from server.broker.redis import RedisBroker
from tests.services import free_port, missing, redis_server

__all__ = ["RedisProcess", "eventually", "quick_broker", "redis_process", "redis_server"]

START_TIMEOUT_S = 10.0


def quick_broker(url: str) -> RedisBroker:
    """A broker that notices outages within a second and retries at most 0.2 s apart."""
    return RedisBroker(
        url,
        heartbeat_s=0.2,
        command_timeout_s=0.5,
        backoff=Backoff(attempts=None, base=0.02, cap=0.2),
    )


async def eventually(condition: Callable[[], bool], within: float = 10.0) -> None:
    """Return once ``condition()`` holds; fail the test after ``within`` seconds."""
    async with asyncio.timeout(within):
        # Polled: broker health and a process's state change without an event to wait on.
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.02)  # the poll interval of a deadline loop


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as connection:
            connection.sendall(b"*1\r\n$4\r\nPING\r\n")
            return connection.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisProcess:
    """A redis-server on ``port`` that can be stopped, started again and paused."""

    def __init__(self, binary: str, port: int, workdir: Path) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self._binary = binary
        self._workdir = workdir
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Start it and return once it answers PING (fails after 10 s)."""
        assert self._process is None, "already running"
        log = (self._workdir / "redis.log").open("ab")
        self._process = await asyncio.create_subprocess_exec(
            self._binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self._workdir),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self._workdir,
        )
        log.close()
        async with asyncio.timeout(START_TIMEOUT_S):
            while not await asyncio.to_thread(_answers, self.port):
                assert self._process.returncode is None, "redis-server exited at start"
                await asyncio.sleep(0.02)  # the poll interval of a deadline loop

    async def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL after 10 s); its clients see the connection drop."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.returncode is None:
            process.send_signal(signal.SIGCONT)  # a paused process cannot handle SIGTERM
            process.terminate()
            try:
                async with asyncio.timeout(10):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()

    def pause(self) -> None:
        """SIGSTOP: connections stay open, nothing answers (a hung Redis)."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)


@pytest.fixture
async def redis_process(tmp_path: Path) -> AsyncIterator[RedisProcess]:
    """A started redis-server for this test only, stopped at its end."""
    binary = shutil.which("redis-server")
    if binary is None:
        missing("redis-server is not installed (Debian package redis-server)")
    assert binary is not None
    workdir = tmp_path / "redis"
    workdir.mkdir()
    redis = RedisProcess(binary, free_port(), workdir)
    await redis.start()
    try:
        yield redis
    finally:
        await redis.stop()
