"""``companion bridge``: the phone between a watch and the server.

    companion bridge --server http://10.0.0.1:8000,http://10.0.0.2:8000 \\
        --token "$PHONE_TOKEN" --source scenario --scenario stress --watch-port 9100

One :class:`Bridge` holds one WebSocket. It takes frames from a source
(:mod:`clients.bridge.sources`), writes them to the journal (:mod:`clients.bridge.journal`)
before it sends them in batches (one ``seq`` per batch), and drops them from the journal only when
the server acks the batch, so neither a server crash nor a bridge crash loses a reading:
after a reconnect or a restart, whatever is unacked goes again (the server keeps one item
per frame key, so a resend is harmless).

It sends a minute's frames together (:mod:`clients.bridge.uploads`): the server stores a
device's minute as one item and a write is billed by the item's size, so one upload a
minute costs 1/60 of a frame-by-frame stream. A frame waits at most ``linger_s`` (70 s);
a spike, :meth:`Bridge.flush` (SIGUSR1: the app goes to the background) or the end of
the source sends at once; ``--linger 0`` streams every frame as it comes.

It keeps the user's state (:mod:`clients.bridge.phonestate`): ``hello`` carries ``since`` = its
version, so a reconnect where nothing changed costs one ``uptodate``; a delta applies only
on its ``base``, otherwise the bridge asks for a snapshot. Each change is relayed to the
watch through a :class:`~clients.bridge.watchlink.WatchLink`.

Acks across hops: the bridge tells the server what each device shows, with ``seen``: the
phone's version as soon as it applied a change, the watch's when the watch answers ``shown``
(and both again after every ``hello``). Commands the server sends (``commands``) are relayed
to the watch; the watch's answer goes back as ``command_result`` and is sent again after every
reconnect until the server's ``command_ack`` (at least once; the server applies it once).

Reconnects follow the one reconnect rule (:mod:`clients.connect.failover`): after a lost
connection, a refusal or a "come back soon" (1012, 1013, 503) the bridge moves on to the
next of its server URLs after a short jittered pause; the backoff grows only once every URL
has failed, up to 5 s; a refused token (HTTP 401/403, close 4001/4003) stops it with exit
code 3. The clock, the sleep, the random source and the WebSocket connector are injected.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from brain.backoff import Backoff
from clients.bridge.journal import Journal, write_atomically
from clients.bridge.phonestate import Applied, PhoneState
from clients.bridge.sources import FrameSource
from clients.bridge.uploads import Outgoing, UploadPolicy
from clients.bridge.watchlink import NullLink, TcpWatchLink, WatchLink
from clients.connect.access import Endpoints
from clients.connect.failover import RECONNECT, Failover
from server.protocol import (
    MAX_FRAMES_PER_MESSAGE,
    MAX_MESSAGE_BYTES,
    ProtocolError,
    Reconnect,
    decode_server_message,
    describe_close,
    reconnect_after,
    reconnect_after_refusal,
    retry_after_s,
)

log = logging.getLogger("companion.bridge")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_AUTH = 3
CLIENT_NAME = "companion-bridge/1"
_NOT_STORED = re.compile(r"batch (\d+) not stored")

Connector = Callable[..., Awaitable[ClientConnection]]


class Bridge:
    """A phone: source → journal → WebSocket → acks; deltas → state → watch."""

    def __init__(
        self,
        server: Endpoints | Sequence[Endpoints],
        token: str,
        source: FrameSource,
        journal: Journal,
        *,
        link: WatchLink | None = None,
        state_path: Path | None = None,
        batch_size: int = 100,
        uploads: UploadPolicy | None = None,
        max_in_flight: int = 8,
        exit_when_done: bool = False,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
        connector: Connector = connect,
        phone_device: str = "phone",
        watch_device: str = "watch-1",
    ) -> None:
        if not 1 <= batch_size <= MAX_FRAMES_PER_MESSAGE or max_in_flight < 1:
            raise ValueError(f"batch_size must be 1..{MAX_FRAMES_PER_MESSAGE}, in flight >= 1")
        self.source = source
        self.journal = journal
        self.link: WatchLink = link or NullLink()
        self.phone_device = phone_device
        self.watch_device = watch_device
        if isinstance(self.link, TcpWatchLink):
            self.link.on_shown = self._watch_shown
            self.link.on_result = self._watch_answered
        self.watch_version: int | None = None
        """The version the watch last said it shows."""
        self.commands: dict[str, dict[str, Any]] = {}
        """Commands relayed to the watch, by id (those the server sent since the start)."""
        self._results: dict[str, dict[str, Any]] = {}
        """The watch's answers the server has not acked yet, by command id."""
        self._ws: ClientConnection | None = None
        self.state = PhoneState()
        self.batch_size = batch_size
        self.max_in_flight = max_in_flight
        self.exit_when_done = exit_when_done
        self.stats: collections.Counter[str] = collections.Counter()
        self._token = token
        self._state_path = state_path
        self._clock = clock
        self._sleep = sleep
        all_servers = (server,) if isinstance(server, Endpoints) else tuple(server)
        policy = backoff or RECONNECT
        # Start at a random URL, so the phones given the same list spread over the nodes.
        self.failover = Failover(
            all_servers,
            backoff=replace(policy, random=rand),
            start=int(rand() * len(all_servers)),
        )
        self._connector = connector
        self.uploads = uploads or UploadPolicy()
        self._unsent = Outgoing(self.uploads, journal.frame)
        self._in_flight: dict[int, list[int]] = {}
        self._seq = 0
        self._highest_sent = 0
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._source_done = False
        self._finish: asyncio.Future[int] | None = None
        self._tasks: set[asyncio.Future[None]] = set()

    # -- the whole run ------------------------------------------------------------------

    async def run(self) -> int:
        """Run until the source is drained (with ``exit_when_done``), the token is refused,
        the source fails, or :meth:`stop`; return the exit code."""
        self._finish = asyncio.get_running_loop().create_future()
        self._load_state()
        if self.state.known:
            await self._relay()  # the watch may have restarted along with us
        tasks = [
            asyncio.create_task(self._guarded(self._produce()), name="bridge-source"),
            asyncio.create_task(self._guarded(self._connections()), name="bridge-connections"),
        ]
        try:
            return await self._finish
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.link.close()
            log.info("bridge stopped: %s", dict(self.stats))

    async def _guarded(self, work: Awaitable[None]) -> None:
        """Run ``work``; if it fails (a full disk, a bad URL), end the run with exit code 1."""
        try:
            await work
        except Exception as exc:
            log.error("bridge failed: %r", exc)
            self.stop(EXIT_FAILED)

    def stop(self, code: int = EXIT_OK) -> None:
        """End :meth:`run` with ``code`` (unacked frames stay in the journal)."""
        if self._finish is not None and not self._finish.done():
            self._finish.set_result(code)

    # -- source → journal ---------------------------------------------------------------

    async def _produce(self) -> None:
        async for frames, cursor in self.source.chunks(self.journal.cursor):
            while self.journal.room < len(frames):
                self._room.clear()
                await self._room.wait()  # backpressure: wait for acks
            ids = self.journal.append(frames, cursor)
            now = self._clock()
            for frame_id, frame in zip(ids, frames, strict=True):
                self._unsent.add(frame_id, frame, now)
            self.stats["frames_read"] += len(ids)
            self._wake.set()
        self._source_done = True
        self.flush()  # nothing more to wait for
        log.info("source drained; %d frames still to be acked", len(self.journal))
        self._check_done()

    def flush(self) -> None:
        """Send every held frame now, whatever its minute (the app goes to the background,
        the source ended)."""
        self._unsent.flush()
        self._wake.set()

    def _check_done(self) -> None:
        if self.exit_when_done and self._source_done and not len(self.journal):
            self.stop(EXIT_OK)

    # -- connections ----------------------------------------------------------------------

    @property
    def server(self) -> Endpoints:
        """The server the bridge uses now (or tries next)."""
        return self.failover.current

    async def _connections(self) -> None:
        while True:
            headers = {"Authorization": f"Bearer {self._token}"}
            server = self.server
            retry_after: int | None = None
            try:
                ws = await self._connector(
                    server.ws,
                    additional_headers=headers,
                    open_timeout=10,
                    max_size=1 << 20,
                    compression=None,
                    user_agent_header=CLIENT_NAME,
                )
            except InvalidStatus as exc:
                status = exc.response.status_code
                body = exc.response.body.decode(errors="replace")[:200] if exc.response.body else ""
                rule, why = reconnect_after_refusal(status), f"HTTP {status} {body}".strip()
                retry_after = retry_after_s(exc.response.headers.get("Retry-After"))
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                rule, why = Reconnect.BACKOFF, f"{type(exc).__name__}: {exc}"
            else:
                self.stats["connects"] += 1
                code, had_reply = await self._session(ws, server)
                if had_reply:
                    self.failover.succeeded()
                rule, why = reconnect_after(code), describe_close(code)
            retry = self.failover.failed(rule, retry_after)
            if retry is None:
                log.error("server refused this bridge (%s): check the token; stopping", why)
                self.stop(EXIT_AUTH)
                return
            self.stats["reconnects"] += 1
            log.warning(
                "disconnected from %s (%s); reconnecting to %s in %.2fs",
                server.http,
                why,
                retry.server.http,
                retry.pause,
            )
            await self._sleep(retry.pause)

    async def _session(self, ws: ClientConnection, server: Endpoints) -> tuple[int | None, bool]:
        """Serve one connection until it closes: (close code, whether the server answered)."""
        self._in_flight.clear()
        pending = [i for i, _ in self.journal.pending()]
        self._unsent.restart(pending)
        self.stats["frames_resent"] += sum(1 for i in pending if i <= self._highest_sent)
        log.info("connected to %s; %d unacked frames to send", server.http, len(pending))
        answered = False
        sender: asyncio.Task[None] | None = None
        try:
            await self._hello(ws)
            self._ws = ws
            await self._report(ws)
            sender = asyncio.create_task(self._send_loop(ws))
            async for data in ws:
                answered = True
                try:
                    message = decode_server_message(data)
                    await self._on_message(ws, message)
                except (ProtocolError, KeyError, TypeError, ValueError) as exc:
                    log.warning("ignored a message the bridge cannot read: %r", exc)
        except ConnectionClosed:
            pass
        finally:
            self._ws = None
            if sender is not None:
                sender.cancel()
                (outcome,) = await asyncio.gather(sender, return_exceptions=True)
                if isinstance(outcome, Exception) and not isinstance(outcome, ConnectionClosed):
                    log.error("sender failed: %r", outcome)
            await ws.close()
        received = ws.protocol.close_rcvd
        return (received.code if received is not None else None), answered

    async def _hello(self, ws: ClientConnection) -> None:
        hello: dict[str, Any] = {"op": "hello", "client": CLIENT_NAME}
        if self.state.version is not None:
            hello["since"] = self.state.version
        await ws.send(orjson.dumps(hello).decode())

    async def _send_loop(self, ws: ClientConnection) -> None:
        while True:
            self._wake.clear()
            if len(self._in_flight) >= self.max_in_flight:
                await self._wake.wait()
                continue
            batch = self._unsent.take(self.batch_size, self._clock())
            if not batch:
                await self._wait_for_due()
                continue
            ids = [frame_id for frame_id, _ in batch]
            frames = [frame for _, frame in batch]
            while ids:
                self._seq += 1
                text = orjson.dumps({"op": "frames", "seq": self._seq, "frames": frames}).decode()
                if len(text) <= MAX_MESSAGE_BYTES or len(ids) == 1:
                    break
                half = len(ids) // 2  # too big for one message: send half, keep the rest
                self._unsent.put_back(ids[half:])
                ids, frames = ids[:half], frames[:half]
            if not ids:
                continue
            self._in_flight[self._seq] = ids
            self._highest_sent = max(self._highest_sent, ids[-1])
            await ws.send(text)
            self.stats["batches_sent"] += 1
            self.stats["frames_sent"] += len(ids)
            log.debug("sent seq %d: %d frames", self._seq, len(ids))

    async def _wait_for_due(self) -> None:
        """Until something may be sent: a wake (new frames, an ack, a flush) or the
        held frames' linger deadline."""
        deadline = self._unsent.deadline()
        if deadline is None:
            await self._wake.wait()
            return
        try:
            async with asyncio.timeout(max(0.0, deadline - self._clock())):
                await self._wake.wait()
        except TimeoutError:
            pass  # the first held frame has waited long enough: take() sends it now

    # -- server messages ------------------------------------------------------------------

    async def _on_message(self, ws: ClientConnection, message: dict[str, Any]) -> None:
        op = message["op"]
        if op == "ack":
            self._on_ack(message)
        elif op == "snapshot":
            if self.state.apply_snapshot(message):
                log.info("snapshot v%s: %s", self.state.version, self._summary())
                await self._changed()
                await self._send_seen(ws, self.phone_device, "phone", self.state.version)
        elif op == "commands":
            await self._on_commands(message)
        elif op == "command_ack":
            if self._results.pop(str(message.get("id")), None) is not None:
                self.stats["command_results_acked"] += 1
        elif op == "delta":
            await self._on_delta(ws, message)
        elif op == "uptodate":
            log.info("up to date at v%s", message.get("version"))
        elif op == "error":
            self._on_error(message)

    def _on_ack(self, message: dict[str, Any]) -> None:
        ids = self._in_flight.pop(int(message["seq"]), None)
        if ids is None:
            return  # an ack of a batch from before a reconnect: its frames were resent
        for rejection in message.get("rejected") or ():
            self.stats["frames_rejected"] += 1
            log.warning("server rejected a frame: %s", rejection)
        self.stats["frames_acked"] += self.journal.ack(ids)
        log.debug(
            "acked seq %s: %d frames, %d pending", message["seq"], len(ids), len(self.journal)
        )
        self._wake.set()
        self._room.set()
        self._check_done()

    def _on_error(self, message: dict[str, Any]) -> None:
        text = str(message.get("message", ""))
        if (match := _NOT_STORED.search(text)) and (ids := self._in_flight.pop(int(match[1]), [])):
            self._unsent.put_back(ids)  # not durable there: send them again
            self._wake.set()
        log.warning("server error %s: %s", message.get("code"), text)

    async def _on_delta(self, ws: ClientConnection, message: dict[str, Any]) -> None:
        applied = self.state.apply_delta(message)
        if applied is Applied.GAP:
            log.info(
                "delta v%s on base %s, mine is v%s: asking for a snapshot",
                message.get("version"),
                message.get("base"),
                self.state.version,
            )
            await self._hello(ws)
        elif applied is Applied.APPLIED:
            latency_ms = self._clock() * 1000 - float(message.get("t", 0))
            self.stats["deltas"] += 1
            log.info("delta v%s (+%.0f ms): %s", self.state.version, latency_ms, self._summary())
            await self._changed()
            await self._send_seen(ws, self.phone_device, "phone", self.state.version)

    async def _changed(self) -> None:
        self._save_state()
        await self._relay()

    async def _relay(self) -> None:
        view = self.state.view()
        view["image_url"] = self.server.resolve(view.get("image_url"))
        await self.link.send_state(view)

    # -- acks across hops -----------------------------------------------------------------

    async def _report(self, ws: ClientConnection) -> None:
        """After a hello: what the phone and the watch show, and unacked command results."""
        await self._send_seen(ws, self.phone_device, "phone", self.state.version)
        await self._send_seen(ws, self.watch_device, "watch", self.watch_version)
        for result in list(self._results.values()):
            await ws.send(orjson.dumps(result).decode())

    async def _send_seen(
        self, ws: ClientConnection | None, device: str, kind: str, version: int | None
    ) -> None:
        if ws is None or version is None:
            return  # told after the next hello
        message = {"op": "seen", "device": device, "kind": kind, "version": version}
        try:
            await ws.send(orjson.dumps(message).decode())
        except ConnectionClosed:
            return  # told after the next hello
        self.stats["seen_sent"] += 1

    def _watch_shown(self, reply: dict[str, Any]) -> None:
        """The watch link's ``on_shown``: report the watch's version to the server."""
        version = reply.get("version")
        if isinstance(version, int) and not isinstance(version, bool):
            self.watch_version = version
            self._spawn(self._send_seen(self._ws, self.watch_device, "watch", version))

    def _watch_answered(self, reply: dict[str, Any]) -> None:
        """The watch link's ``on_result``: send the watch's answer to the server (kept until
        the server acks it)."""
        command_id, outcome = reply.get("id"), reply.get("outcome")
        if not isinstance(command_id, str) or not isinstance(outcome, str):
            return
        result = {
            "op": "command_result",
            "id": command_id,
            "outcome": outcome,
            "device": self.watch_device,
        }
        self._results[command_id] = result
        self.stats["command_results"] += 1
        if (ws := self._ws) is not None:
            self._spawn(self._send_quietly(ws, result))

    async def _on_commands(self, message: dict[str, Any]) -> None:
        for command in message.get("commands") or ():
            if not isinstance(command, dict) or not isinstance(command.get("id"), str):
                continue
            if command["id"] in self._results:
                continue  # answered already; the answer is on its way
            self.commands[command["id"]] = command
            self.stats["commands_relayed"] += 1
            await self.link.send_command(command)

    async def _send_quietly(self, ws: ClientConnection, message: dict[str, Any]) -> None:
        try:
            await ws.send(orjson.dumps(message).decode())
        except ConnectionClosed:
            pass  # sent again after the next hello

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _summary(self) -> str:
        fields = self.state.fields
        return f"{fields.get('state')}/{fields.get('mood')} energy={fields.get('energy')}"

    # -- the saved state ------------------------------------------------------------------

    def _load_state(self) -> None:
        if self._state_path is None:
            return
        try:
            self.state = PhoneState.from_json(self._state_path.read_bytes())
        except FileNotFoundError:
            return
        except ValueError as exc:
            log.warning("ignored the saved state %s: %s", self._state_path, exc)

    def _save_state(self) -> None:
        if self._state_path is not None:
            write_atomically(self._state_path, self.state.to_json())
