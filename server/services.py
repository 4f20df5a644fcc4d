"""The parts one server process is made of, built once and shared by every route.

:class:`Services` is what the endpoints see (``request.app.state.services``); it is built
and torn down by :func:`server.app.create_app`'s lifespan, in dependency order.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from brain.model import Frame
from server.hops.desk import CommandDesk
from server.hops.devices import DeviceBook
from server.ingest import Ingestor
from server.metrics import Metrics
from server.push.hub import Hub
from server.settings import Settings
from server.state import StateService
from server.store.base import Store

FramesHook = Callable[[Mapping[str, Sequence[Frame]]], Awaitable[None]]


@dataclass(slots=True)
class Services:
    """Settings, store, hub, state, ingest and metrics of one app."""

    settings: Settings
    store: Store
    hub: Hub
    state: StateService
    ingestor: Ingestor
    metrics: Metrics
    clock: Callable[[], float] = time.time
    frames_hooks: list[FramesHook] = field(default_factory=list)
    """Called after frames are durable (the pipeline schedules analyses here)."""
    erase_hooks: list[Callable[[str], None]] = field(default_factory=list)
    """Called with a user id after the user's data was erased (in-memory caches forget it)."""
    extras: dict[str, object] = field(default_factory=dict)
    """Optional parts added by later stages (pipeline, avatar saga), by name."""
    devices: DeviceBook = field(kw_only=True)
    """What each device has shown (acks across hops)."""
    commands: CommandDesk = field(kw_only=True)
    """The commands of users' actions."""

    def now_ms(self) -> int:
        return int(self.clock() * 1000)
