"""The parts one server process is made of, built once and shared by every route.

:class:`Services` is what the endpoints see (``request.app.state.services``); it is built
and torn down by :func:`server.app.create_app`'s lifespan, in dependency order.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar, cast

from brain.model import Frame
from server.auth import TokenCache
from server.cost import CostMeter
from server.hops.desk import CommandDesk
from server.hops.devices import DeviceBook
from server.ingest import Ingestor
from server.metrics import Metrics
from server.push.hub import Hub
from server.settings import Settings
from server.state import StateService
from server.store.base import Store

FramesHook = Callable[[Mapping[str, Sequence[Frame]]], Awaitable[None]]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PartKey(Generic[T]):
    """The typed key of a part a later stage adds (like aiohttp's ``AppKey``): declared by
    the module that owns the part (``PIPELINE`` in :mod:`server.analysis.pipeline`), so the
    services, which sit below the stages, never import them, and reading a part is typed."""

    name: str


class Parts:
    """The parts later stages added (pipeline, avatar saga, media, history, ops, admission)."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: dict[str, object] = {}

    def add(self, key: PartKey[T], part: T) -> None:
        """Add ``part`` under ``key``; raises ValueError if the key is taken."""
        if key.name in self._parts:
            raise ValueError(f"a part {key.name!r} is installed already")
        self._parts[key.name] = part

    def get(self, key: PartKey[T]) -> T | None:
        """The part under ``key``, ``None`` when its stage is not running."""
        # add() took the part as a T for this key: the key's type parameter is the check.
        return cast("T | None", self._parts.get(key.name))

    def __getitem__(self, key: PartKey[T]) -> T:
        """The part under ``key``; raises KeyError when its stage is not running."""
        found = self.get(key)
        if found is None:
            raise KeyError(f"no part {key.name!r}: its stage is not running")
        return found


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
    parts: Parts = field(default_factory=Parts)
    """Optional parts added by later stages, by typed key (:class:`PartKey`)."""
    cost: CostMeter | None = None
    """Today's cost of each user, by service and tier (:mod:`server.cost`)."""
    devices: DeviceBook = field(kw_only=True)
    """What each device has shown (acks across hops)."""
    commands: CommandDesk = field(kw_only=True)
    """The commands of users' actions."""
    tokens: TokenCache = field(default_factory=TokenCache)
    """Verified tokens (device handshakes and REST alike): a token seen again, as every
    reconnecting device's and every request of a REST client's is, is not decoded again."""

    def now_ms(self) -> int:
        return int(self.clock() * 1000)
