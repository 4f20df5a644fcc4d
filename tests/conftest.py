"""Shared fixtures: settings, tokens, and a live server on a real loopback socket.

Every async test runs on uvloop, as production does (:func:`pytest_asyncio_loop_factories`).
``live_server`` runs the real app on uvicorn (the production transport options of
:func:`server.runner.uvicorn_config`) inside the test's event loop, bound to a free port on
127.0.0.1, and stops it at the end of the test. Readiness is an event set by uvicorn's
startup, never a sleep.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
import uvloop
import websockets
from websockets.asyncio.client import ClientConnection

from server.app import Stage
from server.auth import DeviceKind, issue
from server.broker.base import Broker
from server.runner import uvicorn_config
from server.settings import Settings
from server.store.base import Store

SECRET = "test-secret-" + "x" * 40


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Async tests and fixtures run on uvloop, the loop ``companion serve`` uses."""
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Embedded-default settings in a temporary data dir, quick timeouts for tests."""
    return Settings(
        data_dir=tmp_path / "data",
        secret=SECRET,
        port=0,
        write_timeout=2.0,
        log_level="warning",
    )


def token(user: str, device: str = "phone", *, ttl: int = 3600, now: float | None = None) -> str:
    """A token signed with the test secret."""
    now_s = int(time.time() if now is None else now)
    return issue(SECRET, user, DeviceKind(device), ttl_s=ttl, now_s=now_s)


def auth(user: str, device: str = "phone") -> dict[str, str]:
    return {"Authorization": f"Bearer {token(user, device)}"}


class _Server(uvicorn.Server):
    """uvicorn that tells when it is listening."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        self.ready.set()

    def install_signal_handlers(self) -> None:
        """The test runner owns the signals."""


@dataclass
class LiveServer:
    """A running server: its URLs, app and services, and helpers to talk to it."""

    url: str
    ws_url: str
    server: _Server
    app: Any

    @property
    def services(self) -> Any:
        return self.app.state.services

    async def connect(
        self, user: str, device: str = "phone", *, hello: bool = True, **kwargs: Any
    ) -> ClientConnection:
        """A WebSocket of ``user``; with ``hello``, the snapshot is read already."""
        ws = await websockets.connect(
            self.ws_url, additional_headers=auth(user, device), max_size=2**20, **kwargs
        )
        if hello:
            await send(ws, {"op": "hello", "client": "test"})
            first = await recv(ws)
            assert first["op"] == "snapshot", first
        return ws

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=10)


async def send(ws: ClientConnection, message: dict[str, Any]) -> None:
    await ws.send(orjson.dumps(message).decode())


async def recv(ws: ClientConnection, within: float = 5.0) -> dict[str, Any]:
    """The next message, decoded; fails the test after ``within`` seconds."""
    async with asyncio.timeout(within):
        data = await ws.recv()
    message: dict[str, Any] = orjson.loads(data)
    return message


async def recv_op(ws: ClientConnection, op: str, within: float = 5.0) -> dict[str, Any]:
    """The next message with ``op``, skipping others (e.g. frame summaries)."""
    async with asyncio.timeout(within):
        while True:
            message = await recv(ws, within)
            if message["op"] == op:
                return message


@asynccontextmanager
async def start_server(
    settings: Settings,
    *,
    store: Store | None = None,
    broker: Broker | None = None,
    stages: Sequence[Stage] | None = (),
    clock: Callable[[], float] = time.time,
) -> AsyncIterator[LiveServer]:
    """Run the app on a free loopback port for the duration of the block."""
    from server.app import create_app

    app = create_app(settings, store=store, broker=broker, stages=stages, clock=clock)
    config = uvicorn_config(settings, port=0, log_level="warning")
    config.app = app
    config.load()
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(30):
        ready = asyncio.create_task(server.ready.wait())
        done, _ = await asyncio.wait({ready, task}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            ready.cancel()
            task.result()
            raise RuntimeError("server stopped during startup")
    port = server.servers[0].sockets[0].getsockname()[1]
    live = LiveServer(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/v1/ws", server, app)
    try:
        yield live
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


@pytest.fixture
async def live_server(settings: Settings) -> AsyncIterator[LiveServer]:
    """The core server (no analysis or avatar stages) on SQLite and the memory broker."""
    async with start_server(settings) as live:
        yield live


@pytest.fixture
def settings_with(settings: Settings) -> Callable[..., Settings]:
    """Settings with some fields replaced."""
    return lambda **changes: replace(settings, **changes)


SLOW_FIXTURES = frozenset({"spawn", "start_server_process", "dynamodb_local"})
"""Fixtures that start processes (servers, clients, DynamoDB Local): a test using one is slow."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``slow`` every test that starts a process or a browser, so ``-m "not slow"`` is a
    fast loop; modules that start processes by hand say ``pytestmark = pytest.mark.slow``."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & SLOW_FIXTURES or item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.slow)
