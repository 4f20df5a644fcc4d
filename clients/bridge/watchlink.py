"""How the phone bridge hands the state to the watch: the :class:`WatchLink` protocol.

On a real phone this is Bluetooth LE; here the built-in :class:`TcpWatchLink` talks to the
simulated watch (:mod:`clients.watch.sim`, another process) over a loopback TCP socket with
newline-delimited JSON, which has the same failure modes that matter: the peer may be gone,
slow, or restarted with no memory.

Delivery keeps only the newest state (a watch wants the present, not a history), resends
it after every reconnect, and waits for the watch's ``shown`` reply before calling it
delivered, so a watch that was away ends on the latest state once it is back. Reconnects to
the watch use the project's one backoff policy (:mod:`brain.backoff`), retrying forever.

Bridge → watch: ``{"op": "state", version, state_hash, state, mood, energy, image_url, …}``.
Watch → bridge: ``{"op": "shown", "version": v, "state_hash": h, "haptic": bool}``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Mapping
from typing import Any, Protocol

import orjson

from brain.backoff import Backoff

log = logging.getLogger(__name__)

WATCH_LINK_BACKOFF = Backoff(attempts=None, base=0.2, cap=5.0)
"""Forever, from 0.2 s to 5 s: a watch that walks back into range is found within seconds."""


class WatchLink(Protocol):
    """Carries state views from the phone to a watch."""

    async def send_state(self, view: Mapping[str, Any]) -> None:
        """Hand over the newest state (returns before the watch has it)."""
        ...

    async def close(self) -> None:
        """Stop delivering; release the connection."""
        ...


class NullLink:
    """No watch paired: states are only logged."""

    async def send_state(self, view: Mapping[str, Any]) -> None:
        log.info("no watch paired; state v%s not relayed", view.get("version"))

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
    ) -> None:
        self.host = host
        self.port = port
        self.delivered: dict[str, Any] | None = None
        """The last ``shown`` reply of the watch."""
        self.deliveries = 0
        self._backoff = backoff
        self._reply_timeout = reply_timeout
        self._latest: dict[str, Any] | None = None
        self._wanted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def send_state(self, view: Mapping[str, Any]) -> None:
        self._latest = {"op": "state", **view}
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
            self._wanted.set()  # a (re)connected watch may have forgotten everything
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
        try:
            while True:
                await self._unless_hangup(self._wanted.wait(), hangup, None)
                self._wanted.clear()
                message = self._latest
                if message is None:
                    continue
                writer.write(orjson.dumps(message) + b"\n")
                await writer.drain()
                reply = await self._unless_hangup(replies.get(), hangup, self._reply_timeout)
                self.delivered = reply
                self.deliveries += 1
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

    @staticmethod
    async def _read_replies(
        reader: asyncio.StreamReader, replies: asyncio.Queue[dict[str, Any]]
    ) -> None:
        """Read the watch's replies into ``replies`` until it hangs up."""
        while line := await reader.readline():
            reply = orjson.loads(line)
            if isinstance(reply, dict) and reply.get("op") == "shown":
                replies.put_nowait(reply)
