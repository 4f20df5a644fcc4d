"""How the phone bridge hands the state to the watch: the :class:`WatchLink` protocol.

On a real phone this is Bluetooth LE; here the built-in :class:`TcpWatchLink` talks to the
simulated watch (:mod:`clients.watch.sim`, another process) over a loopback TCP socket with
newline-delimited JSON, which has the same failure modes that matter: the peer may be gone,
slow, or restarted with no memory.

Delivery keeps only the newest state (a watch wants the present, not a history), resends
it after every reconnect, and waits for the watch's ``shown`` reply before calling it
delivered, so a watch that was away ends on the latest state once it is back. Commands are
sent as they come and again after every reconnect until the watch answers one (at least
once; the watch knows them by id). What the watch says goes back to the bridge through two
callbacks: ``on_shown`` (the version it shows, which the bridge reports to the server as
``seen``) and ``on_result`` (its answer to a command). Reconnects to the watch use the
project's one backoff policy (:mod:`brain.backoff`), retrying forever.

Bridge → watch: ``{"op": "state", version, state_hash, state, mood, energy, image_url, …}``,
``{"op": "command", id, kind, params, expires_at, …}``.
Watch → bridge: ``{"op": "shown", "version": v, "state_hash": h, "haptic": bool}``,
``{"op": "command_result", "id": id, "outcome": "done" | "dismissed" | "expired"}``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import orjson

from brain.backoff import Backoff

log = logging.getLogger(__name__)

WATCH_LINK_BACKOFF = Backoff(attempts=None, base=0.2, cap=5.0)
"""Forever, from 0.2 s to 5 s: a watch that walks back into range is found within seconds."""

Heard = Callable[[dict[str, Any]], None]
"""A callback with what the watch said (a ``shown`` or ``command_result`` message)."""


def _ignore(message: dict[str, Any]) -> None:
    return None


class WatchLink(Protocol):
    """Carries state views from the phone to a watch."""

    async def send_state(self, view: Mapping[str, Any]) -> None:
        """Hand over the newest state (returns before the watch has it)."""
        ...

    async def send_command(self, command: Mapping[str, Any]) -> None:
        """Hand over a command (returns before the watch has it; sent until answered)."""
        ...

    async def close(self) -> None:
        """Stop delivering; release the connection."""
        ...


class NullLink:
    """No watch paired: states are only logged."""

    async def send_state(self, view: Mapping[str, Any]) -> None:
        log.info("no watch paired; state v%s not relayed", view.get("version"))

    async def send_command(self, command: Mapping[str, Any]) -> None:
        log.info("no watch paired; command %s not relayed", command.get("kind"))

    async def close(self) -> None:
        return None


class TcpWatchLink:
    """The simulated watch at ``host:port``: newest state only, resent after reconnects."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        backoff: Backoff = WATCH_LINK_BACKOFF,
        reply_timeout: float = 10.0,
        on_shown: Heard = _ignore,
        on_result: Heard = _ignore,
    ) -> None:
        self.host = host
        self.port = port
        self.delivered: dict[str, Any] | None = None
        """The last ``shown`` reply of the watch."""
        self.deliveries = 0
        self._backoff = backoff
        self._reply_timeout = reply_timeout
        self.on_shown = on_shown
        self.on_result = on_result
        self._latest: dict[str, Any] | None = None
        self._state_due = False
        self._commands: dict[str, dict[str, Any]] = {}
        """Commands the watch has not answered, by id."""
        self._wanted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def send_state(self, view: Mapping[str, Any]) -> None:
        self._latest = {"op": "state", **view}
        self._state_due = True
        self._start()

    async def send_command(self, command: Mapping[str, Any]) -> None:
        self._commands[str(command["id"])] = {**command, "op": "command"}
        self._start()

    def _start(self) -> None:
        self._wanted.set()
        if self._task is None:
            self._task = asyncio.create_task(self._deliver(), name="watch-link")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _deliver(self) -> None:
        """Connect (with backoff), send the newest state, wait for ``shown``; forever."""
        retry = 0
        while True:
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError as exc:
                log.debug("watch at %s:%d unreachable (%s); retry %d", *self._at, exc, retry)
                await self._backoff.wait(retry)
                retry += 1
                continue
            retry = 0
            log.info("watch link connected to %s:%d", *self._at)
            self._state_due = True  # a (re)connected watch may have forgotten everything
            self._wanted.set()
            try:
                await self._session(reader, writer)
            except (OSError, TimeoutError, ValueError) as exc:
                log.info("watch link lost: %r", exc)
            finally:
                writer.close()
                try:
                    await writer.wait_closed()
                except OSError:
                    pass
            await self._backoff.wait(0)

    @property
    def _at(self) -> tuple[str, int]:
        return self.host, self.port

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        hangup = asyncio.create_task(self._read_replies(reader, replies))
        sent: set[str] = set()  # commands sent on this connection
        try:
            while True:
                await self._unless_hangup(self._wanted.wait(), hangup, None)
                self._wanted.clear()
                for command_id, command in list(self._commands.items()):
                    if command_id not in sent:
                        sent.add(command_id)
                        writer.write(orjson.dumps(command) + b"\n")
                await writer.drain()
                message = self._latest
                if message is None or not self._state_due:
                    continue
                self._state_due = False
                writer.write(orjson.dumps(message) + b"\n")
                await writer.drain()
                reply = await self._unless_hangup(replies.get(), hangup, self._reply_timeout)
                self.delivered = reply
                self.deliveries += 1
                self.on_shown(reply)
        except BaseException:
            self._state_due = True  # not known to be shown: sent again on the next link
            raise
        finally:
            hangup.cancel()

    @staticmethod
    async def _unless_hangup(
        waiting: Awaitable[Any], hangup: asyncio.Task[None], limit_s: float | None
    ) -> Any:
        """The result of ``waiting``, unless the watch hangs up or ``limit_s`` pass first.

        Raises :class:`ConnectionResetError` on hangup, :class:`TimeoutError` on timeout.
        """
        task = asyncio.ensure_future(waiting)
        done, _ = await asyncio.wait(
            {task, hangup}, timeout=limit_s, return_when=asyncio.FIRST_COMPLETED
        )
        if task in done:
            return task.result()
        task.cancel()
        if hangup in done:
            hangup.result()  # raises what ended the reader, if anything did
            raise ConnectionResetError("watch closed the link")
        raise TimeoutError(f"no reply from the watch within {limit_s}s")

    async def _read_replies(
        self, reader: asyncio.StreamReader, replies: asyncio.Queue[dict[str, Any]]
    ) -> None:
        """Read the watch's replies until it hangs up: ``shown`` into ``replies``, command
        results to :attr:`on_result` (the command is then no longer resent)."""
        while line := await reader.readline():
            reply = orjson.loads(line)
            if not isinstance(reply, dict):
                continue
            if reply.get("op") == "shown":
                replies.put_nowait(reply)
            elif reply.get("op") == "command_result" and isinstance(reply.get("id"), str):
                self._commands.pop(reply["id"], None)
                self.on_result(reply)
