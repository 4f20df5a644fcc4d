"""What each device has shown: last-seen versions per (user, device), with coalesced writes.

A bridge reports ``seen`` for the phone and for every watch it relays to; a REST watch
reports it through its ``If-None-Match``. :class:`DeviceBook` keeps, per user this node has
heard from, each device's newest report and the newest version of the user it knows of, and
writes a report to the store only when it says something new: another version or kind, a
new device, or the same version after :data:`REFRESH_S` (so a 1 Hz watch costs one write a
minute, not one a second). Writes happen behind, in one task per node that writes the
newest due report of each device (a report is advisory: the connection that sent it does
not wait for the disk, and a failed write is tried again with the next one). The in-memory
``seen_at`` is always the newest; the stored one is at most :data:`REFRESH_S` old. A user
may have :data:`MAX_DEVICES_PER_USER` devices: reports
of further names are refused, so a client cannot grow the table without bound.

It also keeps ``companion_devices_behind{kind}``: the devices this node has heard from whose
last-seen version is more than one behind the newest version this node knows of their user.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from server.errors import StoreError
from server.metrics import Metrics
from server.store.base import DeviceSeen, Store, UserState

MAX_DEVICES_PER_USER: Final = 16
REFRESH_S: Final = 60.0
"""How old a stored ``seen_at`` may get before an unchanged report is written again."""
KNOWN_USERS: Final = 10_000
"""Users whose devices a node keeps in memory (least recently heard from are forgotten)."""
log = logging.getLogger(__name__)

BEHIND_KINDS: Final = ("phone", "watch")
"""The label values of ``companion_devices_behind`` (a fixed set)."""


@dataclass(frozen=True, slots=True)
class DeviceView:
    """A device as the devices route shows it: its last report and how far behind it is."""

    seen: DeviceSeen
    behind: int


@dataclass(slots=True)
class _User:
    devices: dict[str, DeviceSeen] = field(default_factory=dict)
    written: dict[str, int] = field(default_factory=dict)
    """When each device's report was last written (epoch ms)."""
    latest: int = 0
    """The newest version of the user this node knows of."""
    behind: set[str] = field(default_factory=set)
    """Devices more than one version behind ``latest``."""


class DeviceBook:
    """Last-seen versions of devices, written to ``store`` coalesced; the behind gauge."""

    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        clock: Callable[[], float],
        *,
        refresh_s: float = REFRESH_S,
        known_users: int = KNOWN_USERS,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._clock = clock
        self._refresh_ms = int(refresh_s * 1000)
        self._known_users = known_users
        self._users: collections.OrderedDict[str, _User] = collections.OrderedDict()
        self._behind = collections.Counter[str]()
        self._dirty: dict[tuple[str, str], DeviceSeen] = {}
        """Reports due to be written, by (user, device): only the newest is kept."""
        self._writer: asyncio.Task[None] | None = None
        self._recording: set[asyncio.Task[None]] = set()

    async def record(
        self, user_id: str, device: str, kind: str, version: int, *, current: int | None = None
    ) -> bool:
        """Note that ``device`` (a ``kind``) has shown ``version``; ``current``: the newest
        version the caller knows of (a report beyond it counts as ``current``, so a client's
        claim cannot make its user's other devices look behind). ``False`` if the user has
        too many devices already (nothing recorded). The store write, when one is due,
        happens behind: the report is visible here at once, and a slow store never holds up
        the connection that reported.
        Raises :class:`~server.errors.StoreError` only when the user's devices cannot be
        read (the first report of a user on this node)."""
        now_ms = int(self._clock() * 1000)
        if current is not None:
            version = min(version, current)  # no device shows a version nobody sent it
        user = await self._user(user_id)
        previous = user.devices.get(device)
        if previous is None and len(user.devices) >= MAX_DEVICES_PER_USER:
            return False
        seen = DeviceSeen(user_id, device, kind, version, now_ms)
        user.devices[device] = seen
        user.latest = max(user.latest, version, current or 0)
        self._recount(user)
        changed = previous is None or (previous.version, previous.kind) != (version, kind)
        if changed or now_ms - user.written.get(device, 0) >= self._refresh_ms:
            user.written[device] = now_ms
            self._dirty[(user_id, device)] = seen
            if self._writer is None or self._writer.done():
                self._writer = asyncio.get_running_loop().create_task(self._write_behind())
        return True

    def record_soon(self, user_id: str, device: str, kind: str, version: int) -> None:
        """:meth:`record` in a task of its own, for a caller that must not wait for the store
        (a REST poll answers at once); a failure is logged as a warning."""
        task = asyncio.get_running_loop().create_task(
            self._record_logged(user_id, device, kind, version)
        )
        self._recording.add(task)
        task.add_done_callback(self._recording.discard)

    async def _record_logged(self, user_id: str, device: str, kind: str, version: int) -> None:
        try:
            await self.record(user_id, device, kind, version, current=version)
        except StoreError as exc:
            log.warning("seen of a device of %s not stored: %s", user_id, type(exc).__name__)

    async def _write_behind(self) -> None:
        """Write the reports that are due, newest per device, until none is left; a failed
        write is tried again after the store's next success or :meth:`close`."""
        failed: dict[tuple[str, str], DeviceSeen] = {}
        while self._dirty:
            key, seen = next(iter(self._dirty.items()))
            del self._dirty[key]
            try:
                await self._store.put_seen(seen)
            except StoreError as exc:
                log.warning(
                    "seen of a device of %s not stored: %s", seen.user_id, type(exc).__name__
                )
                failed[key] = seen
        for key, seen in failed.items():
            self._dirty.setdefault(key, seen)  # a newer report of the device wins

    async def close(self) -> None:
        """Write what is still due (once more for what failed before)."""
        if self._recording:
            await asyncio.gather(*self._recording)
        if self._writer is not None:
            await self._writer
        if self._dirty:
            self._writer = asyncio.get_running_loop().create_task(self._write_behind())
            await self._writer

    def heard(self, user_id: str, version: int) -> None:
        """The user's state is at ``version`` now (a commit or a delta this node saw)."""
        user = self._users.get(user_id)
        if user is not None and version > user.latest:
            user.latest = version
            self._recount(user)

    async def on_commit(self, previous: UserState, committed: UserState, cause: str) -> None:
        """A commit listener (:attr:`server.state.StateService.listeners`)."""
        self.heard(committed.user_id, committed.version)

    async def devices(self, user_id: str, current: int) -> list[DeviceView]:
        """The user's devices as stored, with this node's newer reports, and how far each is
        behind ``current`` (the user's version now). Raises
        :class:`~server.errors.StoreError`."""
        stored = {seen.device: seen for seen in await self._store.devices_seen(user_id)}
        self.heard(user_id, current)
        known = self._users.get(user_id)
        if known is not None:
            for name, seen in known.devices.items():
                if name not in stored or stored[name].seen_at < seen.seen_at:
                    stored[name] = seen
        return [
            DeviceView(seen, max(0, current - seen.version)) for _, seen in sorted(stored.items())
        ]

    def forget(self, user_id: str) -> None:
        """Drop what this node keeps of the user (an erase hook)."""
        user = self._users.pop(user_id, None)
        if user is not None:
            self._count(user, -1)
        for key in [key for key in self._dirty if key[0] == user_id]:
            del self._dirty[key]  # never written back after the erasure

    async def _user(self, user_id: str) -> _User:
        user = self._users.get(user_id)
        if user is not None:
            self._users.move_to_end(user_id)
            return user
        user = _User()
        for seen in await self._store.devices_seen(user_id):
            user.devices[seen.device] = seen
            user.written[seen.device] = seen.seen_at
            user.latest = max(user.latest, seen.version)
        if (raced := self._users.get(user_id)) is not None:
            return raced  # another report loaded it meanwhile
        self._users[user_id] = user
        while len(self._users) > self._known_users:
            _, oldest = self._users.popitem(last=False)
            self._count(oldest, -1)
        return user

    def _recount(self, user: _User) -> None:
        self._count(user, -1)
        user.behind = {
            name for name, seen in user.devices.items() if user.latest - seen.version > 1
        }
        self._count(user, +1)

    def _count(self, user: _User, sign: int) -> None:
        for name in user.behind:
            kind = user.devices[name].kind
            label = kind if kind in BEHIND_KINDS else "other"
            self._behind[label] += sign
            self._metrics.devices_behind.labels(label).set(self._behind[label])
