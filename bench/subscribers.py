"""Broadcast subscribers and triggers that speak to the three servers of ``bench/fanout.py``.

One client code path for all three, so the comparison measures the servers: the same lean
:class:`~clients.connect.wsclient.WSClient` connections, differing only in the few bytes each
protocol needs.

- ``companion``: ``/v1/ws`` with a watch token, ``hello`` → ``snapshot`` (ready); a round
  is one forced state change through the demo route (its commit's ``version``).
- ``raw``: ``bench/raw_server.py``; ready when open; a round is a message on ``/control``.
- ``socketio``: Engine.IO v4 over a WebSocket (``0`` open → send ``40``; ``40`` ready;
  ``2`` ping → ``3`` pong; ``42["delta",{…}]`` an event); a round is a ``trigger`` event.

Every broadcast message carries the server's send (or commit) time ``t`` in epoch ms.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import httpx
import orjson

from clients.connect.wsclient import WSClient, open_ws
from clients.load.stats import Histogram

DIALECTS = ("companion", "raw", "socketio")
MAX_CONNECTING = 256


class Subscribers:
    """N idle connections that count and time each broadcast round."""

    def __init__(self, dialect: str, base_url: str, token: str = "") -> None:
        if dialect not in DIALECTS:
            raise ValueError(f"dialect must be one of {DIALECTS}, got {dialect!r}")
        self.dialect = dialect
        host = base_url.split("//", 1)[1]
        self.url = {
            "companion": f"ws://{host}/v1/ws",
            "raw": f"ws://{host}/",
            "socketio": f"ws://{host}/socket.io/?EIO=4&transport=websocket",
        }[dialect]
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.conns: list[WSClient] = []
        self.ready = 0
        self.errors: Counter[str] = Counter()
        self.latency = Histogram()
        self.delivered = 0
        self._rounds: Counter[int] = Counter()
        self._wanted = (0, 0)  # (round, count)
        self._event = asyncio.Event()
        self._closing = False

    async def open(self, count: int, rate: float) -> float:
        """Open ``count`` connections at ``rate``/s; the seconds it took until all are ready."""
        gate = asyncio.Semaphore(MAX_CONNECTING)
        started = time.perf_counter()

        async def one() -> None:
            async with gate:
                try:
                    conn = await open_ws(self.url, self.headers, self._on_text, self._on_close)
                except (OSError, TimeoutError) as exc:
                    self.errors[type(exc).__name__] += 1
                    return
            self.conns.append(conn)
            if self.dialect == "companion":
                conn.send_text(b'{"op":"hello","client":"fanout"}')
            elif self.dialect == "raw":
                self._ready()

        tasks = []
        for n in range(count):
            delay = started + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
        await self.wait(lambda: self.ready >= count - sum(self.errors.values()), 30)
        return time.perf_counter() - started

    async def wait(self, predicate: object, seconds: float) -> bool:
        """Wait up to ``seconds`` until ``predicate()`` holds (re-checked on each message)."""
        assert callable(predicate)
        try:
            async with asyncio.timeout(seconds):
                while not predicate():
                    self._event.clear()
                    await self._event.wait()
        except TimeoutError:
            return False
        return True

    async def wait_round(self, number: int, count: int, seconds: float) -> bool:
        """Whether ``count`` connections got round ``number`` within ``seconds``."""
        return await self.wait(lambda: self._rounds[number] >= count, seconds)

    async def close(self) -> None:
        self._closing = True
        for conn in self.conns:
            conn.close()
        if self.conns:
            await asyncio.wait([c.closed for c in self.conns], timeout=5)
        for conn in self.conns:
            conn.abort()
        self.conns.clear()

    # -- receiving -----------------------------------------------------------------------

    def _ready(self) -> None:
        self.ready += 1
        self._event.set()

    def _record(self, message: dict[str, object], now: float) -> None:
        t = message["t"]
        version = message["version"]
        assert isinstance(t, float | int) and isinstance(version, int)
        self.latency.add(now * 1000 - t)
        self.delivered += 1
        self._rounds[version] += 1
        self._event.set()

    def _on_text(self, conn: WSClient, data: bytes, now: float) -> None:
        if self.dialect == "socketio":
            if data.startswith(b"42"):
                name, payload = orjson.loads(data[2:])[:2]
                if name == "delta":
                    self._record(payload, now)
            elif data == b"2":
                conn.send_text(b"3")
            elif data.startswith(b"40"):
                self._ready()
            elif data.startswith(b"0"):
                conn.send_text(b"40")
            return
        message = orjson.loads(data)
        op = message.get("op")
        if op == "delta":
            self._record(message, now)
        elif op == "snapshot":
            self._ready()

    def _on_close(self, conn: WSClient, code: int | None) -> None:
        if not self._closing:
            self.errors[f"closed by server: {code}"] += 1


class Trigger:
    """Starts one broadcast round on a server; :meth:`fire` returns the round's number."""

    def __init__(self, dialect: str, base_url: str, service_token: str = "") -> None:
        self.dialect = dialect
        self.base_url = base_url
        self._token = service_token
        self._http: httpx.AsyncClient | None = None
        self._control: Subscribers | None = None
        self._round = 0

    async def open(self) -> None:
        if self.dialect == "companion":
            self._http = httpx.AsyncClient(
                base_url=self.base_url,
                headers={"Authorization": f"Bearer {self._token}"},
                timeout=30,
            )
        else:
            self._control = Subscribers(self.dialect, self.base_url)
            if self.dialect == "raw":
                self._control.url = self._control.url + "control"
            await self._control.open(1, 1000)

    async def fire(self) -> int:
        if self._http is not None:
            states = (b"stressed", b"calm")
            body = b'{"state":"%s","force":true}' % states[self._round % 2]
            self._round += 1
            response = await self._http.post("/v1/demo/users/fan/state", content=body)
            response.raise_for_status()
            version: int = response.json()["version"]
            return version
        assert self._control is not None
        self._round += 1
        message = b"go" if self.dialect == "raw" else b'42["trigger",{}]'
        self._control.conns[0].send_text(message)
        return self._round

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
        if self._control is not None:
            await self._control.close()
