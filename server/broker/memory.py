"""The in-process broker: one node, no network, delivery in the publisher's call."""

from __future__ import annotations

from server.broker.base import Handler


class MemoryBroker:
    """Delivers each publish straight to the handler if the user is subscribed."""

    def __init__(self) -> None:
        self._handler: Handler | None = None
        self._subscribed: set[str] = set()

    async def start(self, handler: Handler) -> None:
        self._handler = handler

    async def publish(self, user_id: str, payload: bytes) -> None:
        if self._handler is not None and user_id in self._subscribed:
            self._handler(user_id, payload)

    async def subscribe(self, user_id: str) -> None:
        self._subscribed.add(user_id)

    async def unsubscribe(self, user_id: str) -> None:
        self._subscribed.discard(user_id)

    async def close(self) -> None:
        self._handler = None
        self._subscribed.clear()
