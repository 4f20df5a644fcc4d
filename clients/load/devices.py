"""Simulated devices: phones streaming frames and watches waiting for their user's state.

A :class:`Fleet` is the devices of one process. Phones hold a WebSocket, say ``hello``,
and send a ``frames`` batch every ``batch / frame_rate`` seconds, timing each batch until
its ``ack``. Watches either hold a WebSocket (``ws``: ``hello``, then deltas) or poll over
REST: ``poll`` (``GET /v1/users/{id}/state`` with ``If-None-Match``), ``longpoll`` (the same
with ``?wait=``) or ``legacy`` (``GET /avatar/current-state/{id}``, what watches in the field
do). Every delta is timed from its server commit time ``t`` (the clock is shared on
loopback); every state a poller sees for the first time, from its commit time.

Connections open at the plan's ramp rate; one the server drops is reopened under the one
reconnect rule of the clients (:mod:`clients.connect.failover`: soon after 1012/1013/503,
backoff after a loss, never after 4001/4003/401/403) and counted as a reconnect; a phone
resends its unacked batches on the new connection.
"""

from __future__ import annotations

import asyncio
import errno
import random
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import httpx
import orjson

from clients.connect.access import Endpoints
from clients.connect.failover import Failover
from clients.connect.wsclient import HandshakeFailed, WSClient, open_ws
from clients.load.plan import LoadPlan, source_address
from clients.load.stats import RunStats
from server.protocol import Reconnect, reconnect_after, reconnect_after_refusal

MAX_CONNECTING = 512
"""Handshakes in flight at once (more only fills the server's accept backlog)."""


def connect_error(exc: BaseException) -> str:
    """A short, stable name for why a connection attempt failed."""
    if isinstance(exc, HandshakeFailed):
        return f"http {exc.status}"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, OSError) and exc.errno is not None:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return type(exc).__name__


class Device:
    """One phone or WebSocket watch: its connection, versions and unacked batches."""

    __slots__ = ("conn", "index", "kind", "last_version", "pending", "seq", "token", "user")

    def __init__(self, index: int, kind: str, user: str, token: str) -> None:
        self.index = index
        self.kind = kind
        self.user = user
        self.token = token
        self.conn: WSClient | None = None
        self.last_version = -1
        self.seq = 0
        self.pending: dict[int, tuple[float, bytes]] = {}


class Fleet:
    """The devices of ``plan`` with global numbers ``indexes`` (phones come first)."""

    def __init__(
        self,
        plan: LoadPlan,
        tokens: Mapping[tuple[str, str], str],
        indexes: Iterable[int],
        *,
        stats: RunStats | None = None,
        commit_times: Mapping[str, float] | None = None,
    ) -> None:
        self.plan = plan
        self.stats = stats or RunStats()
        self.commit_times = commit_times
        self.devices: list[Device] = []
        for index in indexes:
            kind = "phone" if index < plan.phones else "watch"
            user = plan.user_of(index)
            self.devices.append(Device(index, kind, user, tokens[(user, kind)]))
        self._host = plan.ws_url.split("//", 1)[1].rsplit(":", 1)[0]
        self._nodes = (Endpoints(plan.server.rstrip("/"), plan.ws_url),)
        self._tasks: set[asyncio.Task[None]] = set()
        self._gate = asyncio.Semaphore(MAX_CONNECTING)
        self._stopping = False
        self._http: httpx.AsyncClient | None = None
        self._unacked = 0
        self._heard = asyncio.Event()
        self._all_acked = asyncio.Event()
        self._all_acked.set()
        self.ramp_seconds = 0.0

    # -- lifecycle -------------------------------------------------------------------

    async def ramp(self, rate: float) -> None:
        """Start every device, ``rate`` per second; return when each one opened or failed."""
        if self.plan.watch_mode != "ws" and any(d.kind == "watch" for d in self.devices):
            count = sum(d.kind == "watch" for d in self.devices)
            limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
            timeout = httpx.Timeout(self.plan.longpoll_wait + 15)
            self._http = httpx.AsyncClient(
                base_url=self.plan.server, limits=limits, timeout=timeout
            )
        started = time.perf_counter()
        first_attempts: list[asyncio.Task[None]] = []
        for n, device in enumerate(self.devices):
            if self._stopping:
                break
            delay = started + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if device.kind == "watch" and self.plan.watch_mode != "ws":
                self._spawn(self._poll_loop(device))
                continue
            first_attempts.append(asyncio.create_task(self._connect(device)))
        if first_attempts:
            await asyncio.gather(*first_attempts)
        self.ramp_seconds = time.perf_counter() - started
        for device in self.devices:
            if device.kind == "phone":
                self._spawn(self._phone_loop(device))

    async def stop(self, grace: float = 3.0) -> None:
        """Close every connection (normal closure) and stop every loop."""
        self._stopping = True
        self.stats.counters["open_at_stop"] = self.stats.open_now
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        conns = [d.conn for d in self.devices if d.conn is not None and d.conn.is_open]
        for conn in conns:
            conn.close()
        if conns:
            await asyncio.wait([c.closed for c in conns], timeout=grace)
        for conn in conns:
            conn.abort()
        if self._http is not None:
            await self._http.aclose()

    def drop_all(self) -> int:
        """Cut every open connection at once, as a dead node or a network outage does: each
        device comes back under the reconnect rule. Returns how many were cut."""
        conns = [d.conn for d in self.devices if d.conn is not None and d.conn.is_open]
        for conn in conns:
            conn.abort()
        return len(conns)

    async def settle(self, seconds: float) -> bool:
        """Wait up to ``seconds`` until every batch sent was acked; whether it was."""
        try:
            async with asyncio.timeout(seconds):
                await self._all_acked.wait()
        except TimeoutError:
            return False
        return True

    async def wait_until(self, predicate: Callable[[RunStats], bool], seconds: float) -> bool:
        """Wait up to ``seconds`` (re-checking as messages arrive) until ``predicate(stats)``."""
        try:
            async with asyncio.timeout(seconds):
                while not predicate(self.stats):
                    self._heard.clear()
                    await self._heard.wait()
        except TimeoutError:
            return False
        return True

    def unacked(self) -> int:
        return sum(len(d.pending) for d in self.devices)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- WebSocket devices -------------------------------------------------------------

    async def _connect(self, device: Device, failover: Failover | None = None) -> None:
        """Open ``device``'s socket, retrying under the reconnect rule until it opens, the
        server refuses the token, or the run stops."""
        stats = self.stats
        headers = {"Authorization": f"Bearer {device.token}"}
        local = source_address(device.index, self._host)
        failover = failover or Failover(self._nodes)
        while not self._stopping:
            rule = Reconnect.BACKOFF  # a lost or timed-out attempt, unless the server answered
            retry_after: int | None = None
            async with self._gate:
                started = time.perf_counter()
                try:
                    conn = await open_ws(
                        failover.current.ws,
                        headers,
                        self._on_text,
                        self._on_close,
                        owner=device,
                        local_addr=local,
                    )
                except (HandshakeFailed, TimeoutError, OSError) as exc:
                    stats.error(f"connect: {connect_error(exc)}")
                    conn = None
                    if isinstance(exc, HandshakeFailed) and exc.status:
                        rule = reconnect_after_refusal(exc.status)
                        retry_after = exc.retry_after
            if conn is not None:
                stats.histograms["connect"].add((time.perf_counter() - started) * 1000)
                stats.count("opened")
                stats.open_now += 1
                device.conn = conn
                if device.kind == "watch" or self.plan.phone_hello:
                    conn.send_text(b'{"op":"hello","client":"loadtest"}')
                for _, payload in sorted(device.pending.items()):
                    conn.send_text(payload[1])
                return
            if (retry := failover.failed(rule, retry_after)) is None:
                return  # the token is refused: no reconnect can help
            await asyncio.sleep(retry.pause)

    def _on_text(self, conn: WSClient, data: bytes, now: float) -> None:
        device: Device = conn.owner
        stats = self.stats
        self._heard.set()
        stats.count("bytes_in", len(data) + (2 if len(data) < 126 else 4))
        try:
            message = orjson.loads(data)
            op = message["op"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            stats.error("bad message from server")
            return
        if op == "delta":
            stats.histograms["push"].add(now * 1000 - message["t"])
            stats.count("deltas")
            version = message["version"]
            stats.count(
                "versions_pushed",
                version - max(message.get("base", version - 1), device.last_version),
            )
            device.last_version = version
        elif op == "ack":
            sent = device.pending.pop(message["seq"], None)
            if sent is not None:
                stats.histograms["ack"].add((now - sent[0]) * 1000)
                self._unacked -= 1
                if not self._unacked:
                    self._all_acked.set()
            stats.count("acks")
            stats.count("frames_acked", message["accepted"])
        elif op in ("snapshot", "uptodate"):
            stats.count("snapshots")
            device.last_version = max(device.last_version, message["version"])
        elif op == "error":
            stats.count("server_errors")
            stats.error(f"server: {message.get('code')}")

    def _on_close(self, conn: WSClient, code: int | None) -> None:
        device: Device = conn.owner
        self.stats.open_now -= 1
        if self._stopping:
            return
        self.stats.count("closed_by_server")
        self.stats.error(f"closed: {code}")
        device.conn = None
        failover = Failover(self._nodes)
        if (retry := failover.failed(reconnect_after(code))) is not None:
            self._spawn(self._reconnect(device, failover, retry.pause))

    async def _reconnect(self, device: Device, failover: Failover, pause: float) -> None:
        await asyncio.sleep(pause)
        await self._connect(device, failover)
        if device.conn is not None:
            self.stats.count("reconnects")

    async def _phone_loop(self, device: Device) -> None:
        plan, stats = self.plan, self.stats
        interval = plan.batch / plan.frame_rate
        step_ms = 1000 / plan.frame_rate
        await asyncio.sleep(random.uniform(0, interval))
        frame_seq = 0
        # Open loop: batches are due at fixed times (a slow server shows as ack latency,
        # not as a quietly lower offered rate); a phone that fell behind skips ahead.
        due = time.monotonic()
        while True:
            conn = device.conn
            if conn is not None and conn.is_open:
                now = time.time()
                base = int(now * 1000)
                frames = []
                for k in range(plan.batch):
                    frame_seq += 1
                    frames.append(
                        {
                            "ts": base - int((plan.batch - 1 - k) * step_ms),
                            "hr": 60 + frame_seq % 40,
                            "hrv": 45.0,
                            "steps": k % 3,
                            "device": f"lt{device.index}",
                            "seq": frame_seq,
                        }
                    )
                device.seq += 1
                payload = orjson.dumps({"op": "frames", "seq": device.seq, "frames": frames})
                device.pending[device.seq] = (now, payload)
                self._unacked += 1
                self._all_acked.clear()
                conn.send_text(payload)
                stats.count("batches_sent")
                stats.count("frames_sent", plan.batch)
            due += interval
            now_mono = time.monotonic()
            if due < now_mono - interval:
                due = now_mono  # more than a batch late: do not burst to catch up
            await asyncio.sleep(max(0.0, due - now_mono))

    # -- polling watches ---------------------------------------------------------------

    async def _poll_loop(self, device: Device) -> None:
        plan, stats = self.plan, self.stats
        assert self._http is not None
        http = self._http
        headers = {"Authorization": f"Bearer {device.token}"}
        request_bytes = 0
        if plan.watch_mode == "legacy":
            url = f"/avatar/current-state/{device.user}"
        else:
            url = f"/v1/users/{device.user}/state"
            if plan.watch_mode == "longpoll":
                url += f"?wait={plan.longpoll_wait:g}"
        stats.open_now += 1
        last_hash: str | None = None
        if plan.watch_mode != "longpoll":
            await asyncio.sleep(random.uniform(0, plan.poll_interval))
        failover = Failover(self._nodes)
        while True:
            started = time.time()
            if last_hash is not None and plan.watch_mode != "legacy":
                headers["If-None-Match"] = f'"{last_hash}"'
            try:
                response = await http.get(url, headers=headers)
            except httpx.HTTPError as exc:
                stats.error(f"poll: {type(exc).__name__}")
                retry = failover.failed(Reconnect.BACKOFF)
                assert retry is not None  # BACKOFF is never a stop
                await asyncio.sleep(retry.pause)
                continue
            failover.succeeded()
            now = time.time()
            request_bytes = request_bytes or _request_size(response.request)
            stats.count("requests")
            stats.count("bytes_out", request_bytes)
            stats.count("bytes_in", _response_size(response))
            if response.status_code == 200:
                body = response.json()
                state_hash = body["state_hash"]
                if last_hash is not None and state_hash != last_hash:
                    stats.count("polls_changed")
                    committed = self._commit_time(body, f"{device.user}:{state_hash}")
                    if committed is not None:
                        stats.histograms["poll"].add(max(0.0, now * 1000 - committed))
                last_hash = state_hash
            elif response.status_code != 304:
                stats.error(f"poll: http {response.status_code}")
            if plan.watch_mode != "longpoll":
                await asyncio.sleep(max(0.0, plan.poll_interval - (now - started)))

    def _commit_time(self, body: dict[str, Any], key: str) -> float | None:
        if self.commit_times is not None and key in self.commit_times:
            return self.commit_times[key]
        if "updated_at" in body:
            return float(body["updated_at"])
        return None


def _request_size(request: httpx.Request) -> int:
    """Bytes of an HTTP/1.1 request on the wire (request line, headers, body)."""
    line = len(request.method) + len(request.url.raw_path) + len(" HTTP/1.1\r\n") + 1
    headers = sum(len(k) + len(v) + 4 for k, v in request.headers.raw)
    return line + headers + 2 + len(request.content)


def _response_size(response: httpx.Response) -> int:
    """Bytes of an HTTP/1.1 response on the wire (status line, headers, body)."""
    line = len("HTTP/1.1 200 ") + len(response.reason_phrase) + 2
    headers = sum(len(k) + len(v) + 4 for k, v in response.headers.raw)
    return line + headers + 2 + len(response.content)
