"""Battery-aware delivery: when a pushed delta may wake a device. Pure: time is passed in.

A device states its :class:`~server.protocol.DeliveryPolicy` in ``hello`` or a ``policy``
message. In normal mode every delta goes at once. In saver mode a device is woken at most
once per ``min_interval_s`` for changes that can wait (energy, the image, the reasoning…):
such a delta is *held*, coalesced with later ones in the connection's held
:class:`~server.push.outbox.Outbox` (latest wins, ``changes`` merged, so nothing visible
is lost), and sent when the interval since the last wake-up has passed. A change that
matters — a new ``state`` or ``mood``, a command — goes at once, carrying whatever was held
with it. The policy belongs to one connection (one device), never to the user: a user's
phone in normal mode sees every delta while their watch in saver mode sleeps.

:class:`Pacer` decides; :class:`server.push.endpoint.Connection` holds and sends.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from server.protocol import NORMAL_DELIVERY, DeliveryPolicy, Delta, Power

URGENT_CHANGES: Final = frozenset({"state", "mood", "command", "commands"})
"""Fields of a delta's ``changes`` that wake a saver device at once: what the user would
notice on the watch face, and the commands it is asked to carry out."""


def urgent(changes: Mapping[str, Any]) -> bool:
    """Whether a delta with ``changes`` must be sent at once whatever the policy."""
    return not URGENT_CHANGES.isdisjoint(changes)


class Pacer:
    """One connection's delivery policy and its last wake-up.

    Every message the server pushes to the device counts as a wake-up (:meth:`woke`); so does
    a ``hello`` (the device is awake when it asks).
    """

    __slots__ = ("_policy", "last_wake", "saver")

    def __init__(self, policy: DeliveryPolicy = NORMAL_DELIVERY) -> None:
        self._policy = policy
        self.saver = policy.power is Power.SAVER
        """Whether the device is in saver mode (kept with the policy: read on every push)."""
        self.last_wake = float("-inf")
        """When a push last woke the device (set by :meth:`woke`, or directly on the fast
        path of :meth:`server.push.delivery.Delivery.offer_delta`)."""

    @property
    def policy(self) -> DeliveryPolicy:
        return self._policy

    @policy.setter
    def policy(self, policy: DeliveryPolicy) -> None:
        self._policy = policy
        self.saver = policy.power is Power.SAVER

    def woke(self, now: float) -> None:
        """The device was woken (a push was written to it) at ``now``."""
        self.last_wake = now

    def next_wake(self) -> float:
        """The earliest time a delta that can wait may wake the device (``-inf``: any time)."""
        if not self.saver:
            return float("-inf")
        return self.last_wake + self.policy.min_interval_s

    def hold_until(self, delta: Delta, now: float) -> float | None:
        """When to send ``delta``: ``None`` for now, else the time to hold it until."""
        if not self.saver or urgent(delta.changes):
            return None
        due = self.next_wake()
        return None if due <= now else due
