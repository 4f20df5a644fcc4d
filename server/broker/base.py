"""The broker interface: publish a user's messages, and receive those of subscribed users.

Every node publishes what it commits, and hears (through :data:`Handler`) what any node
published on the users it has subscribed to — its own messages included, so one path
delivers to local and remote subscribers alike. Payloads are encoded server messages
(bytes); the broker never looks inside them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

Handler = Callable[[str, bytes], None]
"""Called with (user_id, payload) for each message of a subscribed user, in order."""


class Broker(Protocol):
    async def start(self, handler: Handler) -> None:
        """Begin delivering messages of subscribed users to ``handler``."""

    async def publish(self, user_id: str, payload: bytes) -> None:
        """Send ``payload`` to every node subscribed to ``user_id``."""

    async def subscribe(self, user_id: str) -> None:
        """Start receiving ``user_id``'s messages (idempotent)."""

    async def unsubscribe(self, user_id: str) -> None:
        """Stop receiving ``user_id``'s messages (idempotent)."""

    async def close(self) -> None:
        """Stop delivering and release connections."""
