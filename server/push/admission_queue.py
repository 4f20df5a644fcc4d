"""Handshakes worked off a slice of time at a time, so pushes keep flowing in a storm.

An event loop runs, in each turn, the callbacks that were ready at its start, then polls,
then the I/O callbacks of every socket that is readable. In a reconnect storm thousands of
sockets become readable in the same turn, each with a WebSocket upgrade to refuse (admission
control) or to carry out (token, ``101``, a :class:`~server.push.endpoint.Connection`): done
in its I/O callback, a single turn held hundreds of milliseconds of handshakes, and a push
to a device that stayed connected (a chain of ready callbacks: the commit's thread result,
the delta's task, the write) waited a whole turn at each step.

:class:`HandshakeQueue` takes that work out of the I/O callbacks: the edge only reads the
request head and queues the rest here; a ``call_soon`` callback works off the queue for at
most :data:`SLICE_S` and, if handshakes are left, schedules itself again behind the callbacks
that became ready meanwhile. A turn then holds at most a slice of handshakes, and a push
waits at most a slice at each step. Admission control decides as each queued handshake is
worked off, so its rate and appointments mean what they did.

The other half of a reconnect storm is the cut: a fleet whose sockets all close at once
sends thousands of EOFs in one turn, and closing each (websockets' close handshake, the
socket, leaving the hub) was another turn of hundreds of milliseconds. A connection's EOF
is answered from the same queue (:meth:`server.push.endpoint.Connection.eof_received`).

The queue is bounded (:data:`MAX_WAITING`): past the bound the edge refuses at once with a
prepared ``503`` and an appointment, the cheapest answer there is. A queued connection keeps
its handshake deadline (``COMPANION_HANDSHAKE_TIMEOUT_S``): a connection answered ``408``,
or closed by its peer or a graceful stop while it waited, is skipped when its turn comes.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Final

from server.services import PartKey, Services

SLICE_S: Final = 0.002
"""Longest run of queued handshakes in one turn of the event loop (a handshake takes
~0.3 ms, a refusal ~0.03 ms: about half a dozen handshakes or fifty refusals a slice). The
longer the slice, the fewer turns a storm takes and the longer a push waits at each step."""
MAX_PER_SLICE: Final = 64
"""Pieces of work run at most in one slice, however quick: what a refusal or a close costs
mostly comes after it, in the same turn or the next (the socket's close, uvloop's
``connection_lost``, leaving the hub), outside the slice's clock."""
MAX_WAITING: Final = 4_096
"""Handshakes queued at most (a socket and a request head each: about 3 KiB): a second or
two of a storm's refusals. Beyond it an upgrade is refused at once. The closes of
connections already open are not bounded: the open-file limit bounds them, and each costs
a queue entry."""


class HandshakeQueue:
    """Work (each a callable that answers one handshake or closes one connection, and
    raises nothing) run in order, at most ``slice_s`` and ``per_slice`` pieces of it per
    turn of the running event loop."""

    __slots__ = ("_limit", "_per_slice", "_scheduled", "_slice_s", "_waiting")

    def __init__(
        self, slice_s: float = SLICE_S, per_slice: int = MAX_PER_SLICE, limit: int = MAX_WAITING
    ) -> None:
        self._slice_s = slice_s
        self._per_slice = per_slice
        self._limit = limit
        self._waiting: deque[Callable[[], None]] = deque()
        self._scheduled = False

    def __len__(self) -> int:
        return len(self._waiting)

    def offer(self, work: Callable[[], None], *, bounded: bool = True) -> bool:
        """Queue ``work`` to run in a later turn of the running loop; ``False`` (not
        queued) if it is ``bounded`` (a new connection's) and :data:`MAX_WAITING` are
        waiting. Raises :class:`RuntimeError` outside a running loop."""
        if bounded and len(self._waiting) >= self._limit:
            return False
        self._waiting.append(work)
        if not self._scheduled:
            asyncio.get_running_loop().call_soon(self._run)
            self._scheduled = True
        return True

    def _run(self) -> None:
        waiting = self._waiting
        # perf_counter, not loop.time(): uvloop's is the time the turn started.
        end = time.perf_counter() + self._slice_s
        left = self._per_slice
        try:
            while waiting:
                waiting.popleft()()
                left -= 1
                if not left or time.perf_counter() >= end:
                    break
        finally:
            # Again behind what became ready meanwhile (a push's next step), even if a piece
            # of work failed: the rest must still be answered.
            if waiting:
                asyncio.get_running_loop().call_soon(self._run)
            else:
                self._scheduled = False


HANDSHAKES: Final[PartKey[HandshakeQueue]] = PartKey("handshake queue")
"""Key of the node's :class:`HandshakeQueue` in ``Services.parts``."""


def handshake_queue(services: Services) -> HandshakeQueue:
    """The node's queue of handshakes and closes to work off (one per app), made on first
    use."""
    found = services.parts.get(HANDSHAKES)
    if found is not None:
        return found
    queue = HandshakeQueue()
    services.parts.add(HANDSHAKES, queue)
    return queue
