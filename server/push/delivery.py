"""Bytes out of an open WebSocket: :class:`Delivery`, the half of
:class:`server.push.endpoint.Connection` that writes.

Server frames are not masked, so a delta is framed once by the hub and written straight to
every socket that takes writes (:meth:`Delivery.offer_delta`: no task, no await). A socket
that is behind (paused transport) gets a bounded coalescing
:class:`~server.push.outbox.Outbox` and a writer task that exists only while there is
something to write; a peer whose outbox overflows or whose socket stays paused past
``write_timeout`` is closed as a slow consumer. A device in battery-saver mode has its
deltas held and merged until its pacer (:mod:`server.push.policy`) lets it wake.

The reading half, the lifecycle and the close are the subclass's
(:class:`~server.push.endpoint.Connection`); :meth:`Delivery._close` is its hook.
"""

from __future__ import annotations

import asyncio

from websockets.server import ServerProtocol

from server.protocol import Delta, Disconnect, Disconnects, text_frame
from server.push.hub import FollowUp
from server.push.outbox import Outbox
from server.push.policy import Pacer
from server.push.session import MAX_SUBSCRIPTIONS, Session
from server.services import Services

__all__ = ["Delivery"]


class Delivery(asyncio.Protocol):
    """Writing to one open WebSocket: direct writes, the outbox and its writer, held deltas."""

    __slots__ = (
        "_closing",
        "_direct",
        "_held",
        "_hold_timer",
        "_open",
        "_outbox",
        "_paused",
        "_resumed",
        "_transport",
        "_versions",
        "_woke_at",
        "_write_now",
        "_writer",
        "_ws",
        "services",
        "session",
    )

    def __init__(
        self, transport: asyncio.Transport, ws: ServerProtocol, session: Session, services: Services
    ) -> None:
        self._transport = transport
        self._ws = ws
        self.session = session
        self.services = services
        self._closing: Disconnect | None = None
        self._outbox: Outbox | None = None
        self._writer: asyncio.Task[None] | None = None
        self._versions = session.versions
        self._write_now = transport.write
        self._woke_at = float("-inf")
        """When :meth:`offer_delta`'s fast path last woke the device (see :meth:`_pacer`)."""
        self._direct = True
        """Whether a delta may be written straight to the socket (:meth:`offer_delta`):
        open, not closing, not paused, nothing queued or held, not in battery saver. Every
        change that can make it false clears it where it happens; :meth:`_reroute`
        recomputes it where one may make it true again."""
        self._paused = False
        self._open = True
        """Whether frames may still be sent: ``websockets``' state is OPEN (kept here, where
        only the connection changes it, because every push reads it)."""
        self._resumed: asyncio.Future[None] | None = None
        self._held: Outbox | None = None
        """Deltas held back from a device in battery-saver mode (:mod:`server.push.policy`)."""
        self._hold_timer: asyncio.TimerHandle | None = None

    @property
    def outbox(self) -> Outbox:
        """Messages waiting for the socket; made when first needed (most connections never
        need one: pushes to a socket that takes writes go straight to it)."""
        if self._outbox is None:
            self._outbox = Outbox(self.services.settings.outbox_limit)
        return self._outbox

    def _close(self, disconnect: Disconnect, text: str | None = None) -> None:
        """Close the connection with ``disconnect`` (the subclass's; a slow consumer here)."""
        raise NotImplementedError

    # -- bytes out ---------------------------------------------------------------------

    def _flush(self) -> None:
        for chunk in self._ws.data_to_send():
            if chunk:
                self._transport.write(chunk)
            else:  # websockets ends the stream: the server closes the TCP connection
                self._transport.close()

    def _write(self, frame: bytes) -> bool:
        """Write one complete server frame now; ``False`` (nothing written) if it cannot."""
        if self._paused or self._closing is not None or not self._open:
            return False
        self._transport.write(frame)
        return True

    def _send(self, text: str) -> None:
        """Send a reply: now if nothing is queued and the socket takes writes, else queued."""
        if self._closing is not None:
            return
        if self._writer is None and self._write(text_frame(text.encode())):
            return
        if not self.outbox.put(text):
            self._close(Disconnects.SLOW_CONSUMER)
            return
        self._ensure_writer()

    def offer(self, text: str, frame: bytes) -> None:
        """Send or queue a pushed message that is not a delta (a frames summary)."""
        if self._closing is not None:
            return
        self._push(text, None, frame, None)

    def offer_delta(
        self, delta: Delta, text: str, frame: bytes, follow: FollowUp | None, now: float
    ) -> None:
        """Send a delta now, hold it (battery saver) or queue it; close the peer if its
        outbox is full. ``follow`` goes right after it (the commands it issued).

        The hub calls this once per subscriber of a change, so it is the fan-out's whole
        per-delivery cost besides the send itself. With nothing queued or held and a socket
        that takes writes, ``frame`` (framed once by the hub for every peer) is written
        synchronously: no task, no await, no outbox.
        """
        if self._direct:
            versions = self._versions  # Session.wants, inline: the version check
            if delta.version <= versions.get(delta.user_id, -1):
                return  # the device has this version already (from a snapshot)
            versions[delta.user_id] = delta.version
            self._woke_at = now
            write = self._write_now
            write(frame)
            if follow is not None:
                write(follow.frame)
            return
        if self._closing is not None:
            return
        if not self.session.wants(delta):
            return
        pacer = self._pacer()
        if pacer.saver or self._held is not None:
            until = pacer.hold_until(delta, now)
            if until is not None or self._held is not None:
                self._hold(delta, text, until, now)
                return
        pacer.woke(now)
        self._push(text, delta, frame, follow)

    def _push(self, text: str, delta: Delta | None, frame: bytes, follow: FollowUp | None) -> None:
        """Write ``frame`` now, or queue ``text`` in the outbox; then ``follow``."""
        if self._writer is None and self._write(frame):
            if follow is not None:
                self._send(follow.text)
            return
        metrics = self.services.metrics
        if delta is not None:
            outbox = self.outbox
            merged = outbox.merged
            accepted = outbox.put_delta(delta, text)
            if outbox.merged != merged:
                metrics.outbox_drops.labels("coalesced").inc()
        else:
            accepted = self.outbox.put(text)
        if not accepted:
            metrics.outbox_drops.labels("full").inc()
            self._close(Disconnects.SLOW_CONSUMER)
            return
        self._ensure_writer()
        if follow is not None:
            self._send(follow.text)

    # -- battery saver: held deltas ------------------------------------------------------

    def _hold(self, delta: Delta, text: str, until: float | None, now: float) -> None:
        """Hold ``delta`` (merged with held ones) until ``until``; ``None``: it matters, send
        it and everything held now."""
        if self._held is None:
            # One merged delta per user: never more entries than subscriptions.
            self._held = Outbox(MAX_SUBSCRIPTIONS)
            self._direct = False
        if not self._held.put_delta(delta, text):
            self.services.metrics.outbox_drops.labels("full").inc()
            self._close(Disconnects.SLOW_CONSUMER)
            return
        if until is None:
            self._release()
        elif self._hold_timer is None:
            loop = asyncio.get_running_loop()
            self._hold_timer = loop.call_later(max(0.0, until - now), self._release)

    def _hold_again(self) -> None:
        """Re-time the held deltas after a message (a new policy, a hello)."""
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None
        now = self.services.clock()
        due = self._pacer().next_wake()
        if due <= now:
            self._release()
        else:
            loop = asyncio.get_running_loop()
            self._hold_timer = loop.call_later(due - now, self._release)

    def _release(self) -> None:
        """Wake the device: send what is held (deltas merged per user)."""
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None
        held, self._held = self._held, None
        self._reroute()
        if held is None or self._closing is not None:
            return
        self.session.pacer.woke(self.services.clock())
        while (item := held.pop()) is not None:
            text, delta = item
            follow = None
            if delta is not None and (commands := self.services.commands.commands_after(delta)):
                follow = FollowUp(commands, text_frame(commands.encode()))
            self._push(text, delta, text_frame(text.encode()), follow)

    def _unhold_into_outbox(self) -> None:
        """Move held deltas to the outbox (where a snapshot supersedes them)."""
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None
        held, self._held = self._held, None
        self._reroute()
        while held is not None and (item := held.pop()) is not None:
            text, delta = item
            if delta is not None:
                self.outbox.put_delta(delta, text)

    def _pacer(self) -> Pacer:
        """The session's pacer, told of the fast path's wake-ups (kept on the connection so
        that a push touches as few objects as it can: 10,000 pushes a change)."""
        pacer = self.session.pacer
        if self._woke_at > pacer.last_wake:
            pacer.last_wake = self._woke_at
        return pacer

    def _reroute(self) -> None:
        """Recompute :attr:`_direct` after a change that may allow direct writes again."""
        self._direct = (
            self._closing is None
            and self._open
            and not self._paused
            and self._writer is None
            and self._held is None
            and not self.session.pacer.saver
        )

    def _ensure_writer(self) -> None:
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._drain())
            self._direct = False

    async def _drain(self) -> None:
        metrics = self.services.metrics
        timeout = self.services.settings.write_timeout
        try:
            while self._outbox is not None and (item := self._outbox.pop()) is not None:
                text, delta = item
                if self._paused:
                    async with asyncio.timeout(timeout):
                        await self._writable()
                if not self._write(text_frame(text.encode())):
                    return  # closing
                if delta is not None:
                    lag = self.services.clock() - delta.t / 1000
                    metrics.push_latency.observe(max(0.0, lag))
        except TimeoutError:
            self._close(Disconnects.SLOW_CONSUMER)
        finally:
            self._writer = None
            if self._outbox is not None and not self._outbox:
                self._outbox = None  # drained: back to direct writes, nothing kept
            self._reroute()

    async def _writable(self) -> None:
        while self._paused:
            if self._resumed is None:
                self._resumed = asyncio.get_running_loop().create_future()
            await self._resumed

    def pause_writing(self) -> None:
        self._paused = True
        self._direct = False

    def resume_writing(self) -> None:
        self._paused = False
        self._reroute()
        resumed, self._resumed = self._resumed, None
        if resumed is not None and not resumed.done():
            resumed.set_result(None)
