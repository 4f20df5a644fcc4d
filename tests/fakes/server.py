"""The harness the fake API servers share: a Starlette app on uvicorn in a thread.

A fake listens on a free 127.0.0.1 port, serves from a background thread, and is ready
when uvicorn says it accepts connections (an event, not a sleep). Requests a test makes
hang wait on :attr:`FakeServer._released`, which :meth:`FakeServer.release` sets from any
thread; :meth:`FakeServer.stop` releases them, then shuts the server down.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Self

import uvicorn
from starlette.applications import Starlette


class FakeServer:
    """Base of a fake HTTP API: subclasses name themselves and build the app."""

    name = "fake API"

    def __init__(self) -> None:
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._released: asyncio.Event | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self.base_url = ""

    def _app(self) -> Starlette:
        raise NotImplementedError

    def release(self) -> None:
        """Let every hung request (and every later hang) answer."""
        if self._loop is not None and self._released is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._released.set)

    def start(self) -> Self:
        """Listen on a free loopback port and serve from a background thread until ready."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        self._socket = sock
        self.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = uvicorn.Config(
            self._app(), lifespan="off", loop="asyncio", http="h11", ws="none",
            log_level="warning", access_log=False, timeout_graceful_shutdown=5,
        )  # fmt: skip
        self._server = _Server(config, self)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name=self.name, daemon=True
        )
        self._thread.start()
        if not self._ready.wait(timeout=10):
            self.stop()
            raise RuntimeError(f"the {self.name} did not start within 10 s")
        return self

    def stop(self) -> None:
        """Release hung requests, shut the server down and wait for its thread."""
        self.release()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            if self._thread.is_alive():
                raise RuntimeError(f"the {self.name} did not stop within 10 s")
        if self._socket is not None:
            self._socket.close()
        self._thread = self._server = self._socket = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _started(self) -> None:
        """Called on the server's loop once it accepts connections."""
        self._loop = asyncio.get_running_loop()
        self._released = asyncio.Event()
        self._ready.set()


class _Server(uvicorn.Server):
    """uvicorn that tells the fake when it is accepting connections."""

    def __init__(self, config: uvicorn.Config, fake: FakeServer) -> None:
        super().__init__(config)
        self._fake = fake

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self._fake._started()
