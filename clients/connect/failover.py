"""Which server a client tries next and how long it waits first: the one reconnect rule.

Every client that reconnects — the phone bridge, the REST watch, the load generator's
devices, the debug page (in JavaScript, checked against this table by a test) — decides
with the same two pieces:

- *what* the end of a connection means comes from :mod:`server.protocol`
  (:func:`~server.protocol.reconnect_after` for a close code,
  :func:`~server.protocol.reconnect_after_refusal` for an HTTP answer): come back
  ``SOON`` (1001, 1012, 1013, 429, 503), after ``BACKOFF``, or ``STOP`` (4001, 4003, 401, 403);
- *when* and *where* comes from :class:`Failover`, a small pure state machine over the
  list of server URLs the client was given and :data:`RECONNECT`, the clients'
  :class:`~brain.backoff.Backoff`.

The rule of :class:`Failover`: after any failure the client moves on to the next URL
(a node that just dropped us, restarted or said "try later" is the worst one to try
again). While some URL has not failed since the last success, the pause is short: the
jittered ``soon`` pause after a "come back soon", a jittered share of ``base`` otherwise.
Only once every URL has failed in a row does the backoff grow, and it stops growing at
``cap`` (5 s), so a node that is back after an outage is found within a few seconds.
A client given one load-balancer URL is the one-URL case of the same rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from brain.backoff import Backoff
from clients.connect.access import Endpoints
from server.protocol import Reconnect

RECONNECT = Backoff(attempts=None, base=0.5, cap=5.0, soon=1.0)
"""The clients' backoff: forever, 0.5 s doubling to a 5 s cap, a 1 s "soon" window.

The cap is what bounds how long a fleet of phones takes to find a node that is back: with
full jitter, each phone is back within ``cap`` seconds, on average within half of it.
"""


@dataclass(frozen=True, slots=True)
class Retry:
    """Where to reconnect and after how long a pause (seconds)."""

    server: Endpoints
    pause: float


class Failover:
    """The client's place in its list of servers and its count of failures in a row.

    ``start`` picks the first URL (clients pass a random index, so a crowd of phones given
    the same list spreads over the nodes). Raises :class:`ValueError` for an empty list.
    """

    def __init__(
        self, servers: Sequence[Endpoints], *, backoff: Backoff = RECONNECT, start: int = 0
    ) -> None:
        if not servers:
            raise ValueError("a client needs at least one server URL")
        self.servers = tuple(servers)
        self.backoff = backoff
        self._index = start % len(self.servers)
        self._failures = 0

    @property
    def current(self) -> Endpoints:
        """The server to use now."""
        return self.servers[self._index]

    @property
    def failures(self) -> int:
        """Failures in a row since the last success."""
        return self._failures

    def succeeded(self) -> None:
        """The current server answered: the next failure starts afresh (and stays short)."""
        self._failures = 0

    def failed(self, rule: Reconnect) -> Retry | None:
        """The current server failed under ``rule``: the next server and the pause first.

        ``None`` for :attr:`Reconnect.STOP`: no server will take this token.
        """
        if rule is Reconnect.STOP:
            return None
        # Rounds in which every URL failed, counted before this failure: 0 while an untried
        # URL remains, so moving on to it is quick; then the backoff grows round by round.
        rounds = self._failures // len(self.servers)
        self._failures += 1
        self._index = (self._index + 1) % len(self.servers)
        if rounds == 0:
            pause = self.backoff.soon_delay() if rule is Reconnect.SOON else self.backoff.delay(0)
        else:
            pause = self.backoff.delay(rounds)
        return Retry(self.current, pause)
