"""The in-process broker: one node, no network, delivery in the publisher's call."""

from __future__ import annotations

from server.broker.base import BrokerHealth, Handler, OnReconnect, deliver


class MemoryBroker:
    """Delivers each publish straight to the handler if the user is subscribed.

    It never disconnects, so it never calls ``on_reconnect``. A handler that raises is
    logged and counted (:meth:`health`) and does not reach the publisher, as with Redis.
    """

    def __init__(self) -> None:
        self._handler: Handler | None = None
        self._subscribed: set[str] = set()
        self._handler_errors = 0

    async def start(self, handler: Handler, on_reconnect: OnReconnect | None = None) -> None:
        self._handler = handler

    async def publish(self, user_id: str, payload: bytes) -> None:
        if self._handler is not None and user_id in self._subscribed:
            if not deliver(self._handler, user_id, payload):
                self._handler_errors += 1

    async def subscribe(self, user_id: str) -> None:
        self._subscribed.add(user_id)

    async def unsubscribe(self, user_id: str) -> None:
        self._subscribed.discard(user_id)

    def health(self) -> BrokerHealth:
        return BrokerHealth(connected=True, handler_errors=self._handler_errors)

    async def close(self) -> None:
        self._handler = None
        self._subscribed.clear()
