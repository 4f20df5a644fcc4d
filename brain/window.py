"""Sliding windows of recent frames: one per active user, bounded in time, size and count.

A :class:`Window` keeps the last ``span_ms`` (15 minutes by default) of one user's frames,
sorted by :data:`~brain.model.TIME_ORDER` (time, then device and sequence number) however
late or out of order they arrive, with duplicates (a resent frame has the same key) ignored,
and running aggregates of them (see :mod:`brain.summary`). :class:`Windows` holds the
windows of the active users and forgets the least recently used ones, so memory stays
bounded however many users have ever connected.

Nothing here reads a clock: every method that needs the time takes ``now_ms``. A window is
*cold* until it has been refilled from the store once: after a restart (or after its user
was evicted) it only knows the frames that arrived since, and the server should read the
last ``span_ms`` from the store and pass them to :meth:`Window.refill`.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Iterable
from typing import TYPE_CHECKING

from brain.aggregates import Key, Part, part_of
from brain.model import Frame
from brain.summary import SUM_SCALE, WindowFrames, WindowSummary

if TYPE_CHECKING:
    from brain.summary import Cumulative

DEFAULT_SPAN_MS = 15 * 60_000
"""How much history a window keeps: 15 minutes."""

DEFAULT_MAX_FRAMES = 3_600
"""Frames one window holds at most: 15 minutes at 1 Hz from four devices."""

REBASE_MIN_LAG_MS = 60_000
"""How far the origin of the least-squares ``x`` may lag the oldest frame at the least
before the window recomputes its sums (see :meth:`Window._rebase`)."""

DEFAULT_MAX_USERS = 50_000
"""Windows a registry holds at most before it forgets the least recently used user."""


class Window:
    """The last ``span_ms`` of one user's frames, oldest first, without duplicates.

    Besides the frames, a window keeps running aggregates of them (:mod:`brain.aggregates`,
    one :class:`~brain.aggregates.Part` per device's heart rates and one for frames without)
    and prefix sums for the per-minute trend, updated as frames enter and leave, so the
    :class:`~brain.summary.WindowFrames` that :attr:`frames` returns carry everything an
    analysis reads without a pass over the frames.

    Raises :class:`ValueError` when ``span_ms`` or ``max_frames`` is not positive.
    """

    __slots__ = (
        "_cold",
        "_cumulative",
        "_cumulative_skip",
        "_cumulative_stale",
        "_frames",
        "_keys",
        "_origin_ms",
        "_parts",
        "_snapshot",
        "max_frames",
        "span_ms",
    )

    def __init__(self, *, span_ms: int = DEFAULT_SPAN_MS, max_frames: int = DEFAULT_MAX_FRAMES):
        if span_ms <= 0:
            raise ValueError(f"span_ms must be positive, got {span_ms}")
        if max_frames <= 0:
            raise ValueError(f"max_frames must be positive, got {max_frames}")
        self.span_ms = span_ms
        self.max_frames = max_frames
        # Two parallel sorted lists: keys (ts, device, seq) for bisecting, frames for reading.
        self._keys: list[Key] = []
        self._frames: list[Frame] = []
        self._cold = True
        self._parts: dict[str | None, Part] = {}
        self._origin_ms = 0
        """Where the parts' least-squares ``x`` starts; moved forward by :meth:`_rebase`."""
        self._cumulative: Cumulative = _new_cumulative()
        self._cumulative_skip = 0
        self._cumulative_stale = False
        self._snapshot: WindowFrames | None = None

    def __len__(self) -> int:
        return len(self._frames)

    def __repr__(self) -> str:
        return f"Window(frames={len(self._frames)}, span_ms={self.span_ms}, cold={self._cold})"

    @property
    def frames(self) -> WindowFrames:
        """The frames held, oldest first, with their aggregates (call :meth:`evict` first to
        drop expired ones). The same object until the window changes."""
        if self._snapshot is None:
            self._sync_cumulative()
            summary = WindowSummary(
                frames=tuple(self._frames),
                parts=tuple(p.freeze() for p in self._parts.values() if p.frames),
                cumulative=self._cumulative,
                cumulative_skip=self._cumulative_skip,
            )
            self._snapshot = WindowFrames.of(summary.frames, summary)
        return self._snapshot

    @property
    def latest_ts(self) -> int | None:
        """The timestamp of the newest frame, or ``None`` when the window is empty."""
        return self._frames[-1].ts if self._frames else None

    def is_cold(self) -> bool:
        """Whether the window still needs a refill from the store (it was never refilled)."""
        return self._cold

    def mark_cold(self) -> None:
        """Ask for a refill, e.g. when frames of this user may have landed on another node."""
        self._cold = True

    def add(self, frames: Iterable[Frame], *, now_ms: int) -> int:
        """Insert frames in time order, skip duplicates and expired ones; return how many were new.

        Evicts what fell out of the window at ``now_ms`` and, past ``max_frames``, the oldest.
        """
        cutoff = now_ms - self.span_ms
        added = 0
        keys = self._keys
        # Frames newer than all held (the common case) go to their parts in one batch each.
        pending: dict[str | None, tuple[list[Key], list[Frame]]] = {}
        for frame in frames:
            if frame.ts < cutoff:
                continue  # too late to matter, and re-adding it would resurrect evicted data
            key: Key = (frame.ts, frame.device, frame.seq)
            if not keys:
                self._origin_ms = frame.ts
            if not keys or key > keys[-1]:
                # Frames arrive in order, mostly, so appending avoids a bisect.
                keys.append(key)
                self._frames.append(frame)
                batch = pending.get(part_of(frame))
                if batch is None:
                    batch = pending[part_of(frame)] = ([], [])
                batch[0].append(key)
                batch[1].append(frame)
                added += 1
                continue
            at = bisect_left(keys, key)
            if at < len(keys) and keys[at] == key:
                continue
            keys.insert(at, key)
            self._frames.insert(at, frame)
            if at < len(self._cumulative[0]) - 1 - self._cumulative_skip:
                self._cumulative_stale = True  # prefix sums past ``at`` changed
            self._flush(pending)
            self._part(part_of(frame)).insert(key, frame, self._origin_ms)
            added += 1
        self._flush(pending)
        if added:
            self._snapshot = None
        self.evict(now_ms=now_ms)
        return added

    def _part(self, name: str | None) -> Part:
        part = self._parts.get(name)
        if part is None:
            part = self._parts[name] = Part(name)
        return part

    def _flush(self, pending: dict[str | None, tuple[list[Key], list[Frame]]]) -> None:
        for name, (keys, frames) in pending.items():
            self._part(name).extend(keys, frames, self._origin_ms)
        pending.clear()

    def refill(self, frames: Iterable[Frame], *, now_ms: int) -> int:
        """Merge frames read from the store and mark the window warm; return how many were new."""
        added = self.add(frames, now_ms=now_ms)
        self._cold = False
        return added

    def evict(self, *, now_ms: int) -> int:
        """Drop frames older than ``now_ms - span_ms`` and the oldest beyond ``max_frames``.

        Returns how many frames were dropped.
        """
        # (cutoff,) sorts before any key (cutoff, device, seq): bisecting on it finds the
        # first frame at cutoff.
        cutoff = max(now_ms - self.span_ms, 0)
        expired = bisect_left(self._keys, (cutoff,))
        overflow = len(self._keys) - expired - self.max_frames
        drop = expired + max(overflow, 0)
        if not drop:
            return 0
        self._snapshot = None
        if drop == len(self._keys):
            self._keys.clear()
            self._frames.clear()
            self._parts.clear()
            self._cumulative_stale = True
            return drop
        first_kept = self._keys[drop]
        # Evictions take the oldest frames, so each part loses its oldest ones: those
        # before the first frame kept.
        for name, part in list(self._parts.items()):
            part.drop_oldest(bisect_left(part.keys, first_kept), self._origin_ms)
            if not part.frames:
                del self._parts[name]
        if drop > len(self._cumulative[0]) - 1 - self._cumulative_skip:
            self._cumulative_stale = True
        else:
            self._cumulative_skip += drop
        del self._keys[:drop]
        del self._frames[:drop]
        # Σx² - (Σx)²/n cancels more digits the further x starts from 0 relative to the
        # spread of the frames: rebase once the origin lags twice the window's width (at
        # least a minute, at most a span), which bounds that loss to a factor of ~10.
        width = self._frames[-1].ts - self._frames[0].ts
        lag_limit = min(self.span_ms, max(2 * width, REBASE_MIN_LAG_MS))
        if self._frames[0].ts - self._origin_ms > lag_limit:
            self._rebase()
        return drop

    def since(self, start_ms: int) -> tuple[Frame, ...]:
        """The frames with ``ts >= start_ms``, oldest first."""
        at = bisect_left(self._keys, (max(start_ms, 0),))
        return tuple(self._frames[at:])

    def _rebase(self) -> None:
        """Start ``x`` at the oldest frame again and recompute the parts' sums from scratch.

        Runs once the oldest frame is past the origin by twice the window's width (at least
        :data:`REBASE_MIN_LAG_MS`, at most a span): at most once per that many evicted frames,
        so constant time per frame, and it keeps ``x`` small and the float sums' drift
        bounded.
        """
        self._origin_ms = self._frames[0].ts
        for part in self._parts.values():
            part.rebase(self._origin_ms)

    def _sync_cumulative(self) -> None:
        """Bring the prefix sums up to the frames held: append, or start new arrays when an
        entry would change (a snapshot may still read the old ones) or the arrays hold more
        evicted entries than live ones."""
        frames = self._frames
        if self._cumulative_stale or self._cumulative_skip > len(frames) + 1024:
            self._cumulative = _new_cumulative()
            self._cumulative_skip = 0
            self._cumulative_stale = False
        hr_n, hr_s, hrv_n, hrv_s, steps = self._cumulative
        done = len(hr_n) - 1 - self._cumulative_skip
        a, b, c, d, e = hr_n[-1], hr_s[-1], hrv_n[-1], hrv_s[-1], steps[-1]
        for f in frames[done:]:
            if f.hr is not None:
                a += 1
                b += int(f.hr * SUM_SCALE)
            if f.hrv is not None:
                c += 1
                d += int(f.hrv * SUM_SCALE)
            if f.steps:
                e += f.steps
            hr_n.append(a)
            hr_s.append(b)
            hrv_n.append(c)
            hrv_s.append(d)
            steps.append(e)


def _new_cumulative() -> Cumulative:
    return (array("d", [0.0]), [0], array("d", [0.0]), [0], array("d", [0.0]))


class Windows:
    """The windows of active users, at most ``max_users`` of them, least recently used first out.

    Every access (``window``, ``add``, ``get``) marks the user as recently used. A user whose
    window is forgotten comes back cold, so the server refills it from the store.

    Raises :class:`ValueError` when ``max_users`` is not positive.
    """

    def __init__(
        self,
        *,
        span_ms: int = DEFAULT_SPAN_MS,
        max_frames: int = DEFAULT_MAX_FRAMES,
        max_users: int = DEFAULT_MAX_USERS,
    ) -> None:
        if max_users <= 0:
            raise ValueError(f"max_users must be positive, got {max_users}")
        Window(span_ms=span_ms, max_frames=max_frames)  # validate once, here, loudly
        self.span_ms = span_ms
        self.max_frames = max_frames
        self.max_users = max_users
        # user_id -> (window, last use in ms); the order is the LRU order, oldest first.
        self._windows: OrderedDict[str, tuple[Window, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._windows)

    def __contains__(self, user_id: object) -> bool:
        return user_id in self._windows

    def get(self, user_id: str, *, now_ms: int) -> Window | None:
        """The user's window if it is held (marking the user as used), else ``None``."""
        entry = self._windows.get(user_id)
        if entry is None:
            return None
        self._windows[user_id] = (entry[0], now_ms)
        self._windows.move_to_end(user_id)
        return entry[0]

    def window(self, user_id: str, *, now_ms: int) -> Window:
        """The user's window, created cold if absent (possibly forgetting the idlest user)."""
        found = self.get(user_id, now_ms=now_ms)
        if found is not None:
            return found
        created = Window(span_ms=self.span_ms, max_frames=self.max_frames)
        self._windows[user_id] = (created, now_ms)
        while len(self._windows) > self.max_users:
            self._windows.popitem(last=False)
        return created

    def add(self, user_id: str, frames: Iterable[Frame], *, now_ms: int) -> int:
        """Add frames to the user's window (creating it); return how many were new."""
        return self.window(user_id, now_ms=now_ms).add(frames, now_ms=now_ms)

    def is_cold(self, user_id: str) -> bool:
        """Whether the user's window needs a refill from the store (also when it is absent)."""
        entry = self._windows.get(user_id)
        return entry is None or entry[0].is_cold()

    def forget(self, user_id: str) -> bool:
        """Drop the user's window (e.g. after a GDPR delete); return whether one was held."""
        return self._windows.pop(user_id, None) is not None

    def evict_idle(self, *, now_ms: int, idle_ms: int) -> list[str]:
        """Forget users not used for ``idle_ms`` or longer; return their ids, idlest first."""
        gone: list[str] = []
        # The dict is in LRU order, so the idle users are a prefix of it.
        for user_id, (_, used_ms) in self._windows.items():
            if now_ms - used_ms < idle_ms:
                break
            gone.append(user_id)
        for user_id in gone:
            del self._windows[user_id]
        return gone

    def users(self) -> list[str]:
        """The ids of the users held, least recently used first."""
        return list(self._windows)
