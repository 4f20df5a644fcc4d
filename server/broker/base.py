"""The broker interface: publish a user's messages, and receive those of subscribed users.

Every node publishes what it commits, and hears (through :data:`Handler`) what any node
published on the users it has subscribed to — its own messages included, so one path
delivers to local and remote subscribers alike. Payloads are encoded server messages
(bytes); the broker never looks inside them.

A broker that talks to a server (Redis) loses messages while it is disconnected, and heals
by itself: it reconnects, subscribes again, and calls ``on_reconnect`` so that the hub can
resynchronise its devices by version. :meth:`Broker.health` says how it is doing, for
``/readyz`` and ``/metrics``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

log = logging.getLogger(__name__)

SECRET_QUERY_NAMES: Final = frozenset({"password", "pass", "secret", "token", "auth"})
"""Query parameters of a broker URL that carry a credential (redis-py reads ``password``)."""


def safe_url(url: str) -> str:
    """``url`` as it may be logged or printed: the user and password replaced by ``***``
    (``rediss://:secret@host`` → ``rediss://***@host``), and so are the values of query
    parameters that carry a credential (``?password=…``). A URL that cannot be parsed is
    replaced whole (it may hold anything). Never raises."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparsable URL>"
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    netloc = parts.netloc
    if parts.username is not None or parts.password is not None:
        netloc = "***@" + host + (f":{port}" if port is not None else "")
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(name.lower() in SECRET_QUERY_NAMES for name, _ in pairs):
            hidden = [(n, "***" if n.lower() in SECRET_QUERY_NAMES else v) for n, v in pairs]
            query = urlencode(hidden, safe="*")
    return urlunsplit(parts._replace(netloc=netloc, query=query))


Handler = Callable[[str, bytes], None]
"""Called with (user_id, payload) for each message of a subscribed user, in order."""

OnReconnect = Callable[[], None]
"""Called after the broker reconnected: messages published meanwhile did not arrive."""


@dataclass(frozen=True, slots=True)
class BrokerHealth:
    """How a broker is doing right now.

    ``last_heard_age_s`` is the time since the broker last heard from its server (a message
    or the answer to a heartbeat), ``None`` for a broker without a server or never connected.
    ``reconnects`` and ``handler_errors`` count since the broker was built.
    """

    connected: bool
    reconnects: int = 0
    handler_errors: int = 0
    last_heard_age_s: float | None = None


class Broker(Protocol):
    async def start(self, handler: Handler, on_reconnect: OnReconnect | None = None) -> None:
        """Begin delivering messages of subscribed users to ``handler``.

        Never raises for an unreachable server: the broker keeps connecting in the
        background and reports it in :meth:`health`.
        """

    async def publish(self, user_id: str, payload: bytes) -> None:
        """Send ``payload`` to every node subscribed to ``user_id``.

        Raises :class:`~server.errors.BrokerUnavailable` when the message could not be handed
        to the broker (disconnected, or no answer within its deadline).
        """

    async def subscribe(self, user_id: str) -> None:
        """Start receiving ``user_id``'s messages (idempotent; kept across reconnects)."""

    async def unsubscribe(self, user_id: str) -> None:
        """Stop receiving ``user_id``'s messages (idempotent)."""

    def health(self) -> BrokerHealth:
        """Connected or not, reconnects and handler errors so far, time since last heard."""

    async def close(self) -> None:
        """Stop delivering and release connections."""


def deliver(handler: Handler, user_id: str, payload: bytes) -> bool:
    """Hand one message to ``handler``; whether it took it without raising.

    Both brokers deliver through here, so a handler that raises is treated the same way
    everywhere: logged, counted by the caller, and the next message is delivered as usual.
    """
    try:
        handler(user_id, payload)
    except Exception:
        # The hub's handler catches what a message or a peer can cause; reaching this is a
        # bug in it, worth its traceback.
        log.exception("broker handler failed on a message of %s; delivering on", user_id)
        return False
    return True
