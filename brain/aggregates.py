"""Running aggregates of one *part* of a window: sums, counts and first/last frames, per frame.

A window (see :mod:`brain.window`) splits its frames into parts: the heart-rate frames of
each device (``part_of(frame) == frame.device``), and the frames that carry no heart rate,
whichever device sent them (``part_of(frame) is None``). The features follow one device's
heart rate plus the frames without one, or every frame (see :func:`brain.features.primary`),
so every number they need is a combination over parts: counts and sums add up, and the
first or last frame with a field is the earliest or latest of the parts' own.

A :class:`Part` keeps its frames in time order (:data:`~brain.model.TIME_ORDER`) and updates
its aggregates as each frame enters or leaves, in constant time per frame: least-squares
sums of heart rate over time (``x`` in minutes from the window's ``origin_ms``), sums and
counts of HRV, SpO2, skin temperature and breathing rate, the steps, and the first and last
frame carrying each field the features read. Frames only ever leave from the oldest end
(a window evicts by age and by count, both oldest first), so the latest frame with a field
leaves only when no other frame has it, and the earliest one is found again by scanning
forward from the new start: every frame is scanned at most once per field, so that scan
costs constant time per frame too. :meth:`Part.freeze` gives an immutable
:class:`PartSummary` for an analysis.

Float sums are updated by adding and subtracting, so they drift by a few ulps per update;
the window recomputes them (:meth:`Part.rebase`) when its origin falls behind, which also
bounds the drift (see :mod:`brain.summary` for the tolerance this gives).
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass

from brain.model import TIME_ORDER, Frame

MINUTE_MS = 60_000

ENV_FIELDS = ("temp_c", "humidity_pct", "speed_mps", "weather")
"""Environment fields whose latest value the features report."""

TAIL_FRAMES = 11
"""Newest frames a summary keeps per part: the recent part of the features needs at most
:data:`brain.features.RECENT_FRAMES` (11) frames of the union of the parts it follows."""

Key = tuple[int, str, int]
"""A frame's place in time order: ``(ts, device, seq)``, as :data:`TIME_ORDER` gives it."""


def part_of(frame: Frame) -> str | None:
    """The part a frame belongs to: its device if it carries a heart rate, else ``None``."""
    return frame.device if frame.hr is not None else None


@dataclass(frozen=True, slots=True)
class PartSummary:
    """One part's aggregates at one moment (see :class:`Part` for what each field sums).

    ``n_fields`` and ``last_fields`` follow :data:`ENV_FIELDS`; ``tail`` holds the newest
    :data:`TAIL_FRAMES` frames, oldest first.
    """

    device: str | None
    count: int
    first: Frame
    last: Frame
    n_hr: int
    sx: float
    sxx: float
    sy: float
    sxy: float
    n_hrv: int
    s_hrv: float
    n_spo2: int
    s_spo2: float
    n_skin: int
    s_skin: float
    n_resp: int
    s_resp: float
    n_steps: int
    s_steps: int
    first_steps: Frame | None
    last_steps: Frame | None
    n_alt: int
    first_alt: Frame | None
    last_alt: Frame | None
    last_env: Frame | None
    last_fields: tuple[Frame | None, ...]
    tail: tuple[Frame, ...]


class Part:
    """The frames of one part, in time order, with their running aggregates."""

    __slots__ = (
        "device",
        "first_alt",
        "first_steps",
        "frames",
        "keys",
        "last_alt",
        "last_env",
        "last_fields",
        "last_steps",
        "n_alt",
        "n_env",
        "n_fields",
        "n_hr",
        "n_hrv",
        "n_resp",
        "n_skin",
        "n_spo2",
        "n_steps",
        "s_hrv",
        "s_resp",
        "s_skin",
        "s_spo2",
        "s_steps",
        "sx",
        "sxx",
        "sxy",
        "sy",
    )

    def __init__(self, device: str | None) -> None:
        self.device = device
        self.keys: list[Key] = []
        self.frames: list[Frame] = []
        self._reset()

    def _reset(self) -> None:
        self.n_hr = self.n_hrv = self.n_spo2 = self.n_skin = self.n_resp = 0
        self.sx = self.sxx = self.sy = self.sxy = 0.0
        self.s_hrv = self.s_spo2 = self.s_skin = self.s_resp = 0.0
        self.n_steps = self.s_steps = self.n_alt = self.n_env = 0
        self.first_steps: Frame | None = None
        self.last_steps: Frame | None = None
        self.first_alt: Frame | None = None
        self.last_alt: Frame | None = None
        self.last_env: Frame | None = None
        self.n_fields = [0] * len(ENV_FIELDS)
        self.last_fields: list[Frame | None] = [None] * len(ENV_FIELDS)

    def __len__(self) -> int:
        return len(self.frames)

    def insert(self, key: Key, frame: Frame, origin_ms: int) -> None:
        """Add a frame that is not held yet (the window checked), in time order."""
        keys = self.keys
        if not keys or key > keys[-1]:
            keys.append(key)
            self.frames.append(frame)
        else:
            at = bisect_left(keys, key)
            keys.insert(at, key)
            self.frames.insert(at, frame)
        self._add(frame, key, origin_ms)

    def _add(self, f: Frame, key: Key, origin_ms: int) -> None:
        hr = f.hr
        if hr is not None:
            x = (f.ts - origin_ms) / MINUTE_MS
            self.n_hr += 1
            self.sx += x
            self.sxx += x * x
            self.sy += hr
            self.sxy += x * hr
        if f.hrv is not None:
            self.n_hrv += 1
            self.s_hrv += f.hrv
        if f.spo2 is not None:
            self.n_spo2 += 1
            self.s_spo2 += f.spo2
        if f.skin_temp is not None:
            self.n_skin += 1
            self.s_skin += f.skin_temp
        if f.resp_rate is not None:
            self.n_resp += 1
            self.s_resp += f.resp_rate
        if f.steps is not None:
            self.n_steps += 1
            self.s_steps += f.steps
            self.first_steps = _earlier(self.first_steps, f, key)
            self.last_steps = _later(self.last_steps, f, key)
        env = f.env
        if env is None:
            return
        self.n_env += 1
        self.last_env = _later(self.last_env, f, key)
        if env.altitude_m is not None:
            self.n_alt += 1
            self.first_alt = _earlier(self.first_alt, f, key)
            self.last_alt = _later(self.last_alt, f, key)
        for i, name in enumerate(ENV_FIELDS):
            if getattr(env, name) is not None:
                self.n_fields[i] += 1
                self.last_fields[i] = _later(self.last_fields[i], f, key)

    def drop_oldest(self, count: int, origin_ms: int) -> None:
        """Remove the ``count`` oldest frames and their share of every aggregate."""
        if count <= 0:
            return
        if count >= len(self.frames):
            self.keys.clear()
            self.frames.clear()
            self._reset()  # exact zeros: no drift survives an empty part
            return
        for f in self.frames[:count]:
            self._remove(f, origin_ms)
        del self.keys[:count]
        del self.frames[:count]
        self._refresh_refs()

    def _remove(self, f: Frame, origin_ms: int) -> None:
        hr = f.hr
        if hr is not None:
            x = (f.ts - origin_ms) / MINUTE_MS
            self.n_hr -= 1
            self.sx -= x
            self.sxx -= x * x
            self.sy -= hr
            self.sxy -= x * hr
        if f.hrv is not None:
            self.n_hrv -= 1
            self.s_hrv -= f.hrv
        if f.spo2 is not None:
            self.n_spo2 -= 1
            self.s_spo2 -= f.spo2
        if f.skin_temp is not None:
            self.n_skin -= 1
            self.s_skin -= f.skin_temp
        if f.resp_rate is not None:
            self.n_resp -= 1
            self.s_resp -= f.resp_rate
        if f.steps is not None:
            self.n_steps -= 1
            self.s_steps -= f.steps
        env = f.env
        if env is None:
            return
        self.n_env -= 1
        if env.altitude_m is not None:
            self.n_alt -= 1
        for i, name in enumerate(ENV_FIELDS):
            if getattr(env, name) is not None:
                self.n_fields[i] -= 1

    def _refresh_refs(self) -> None:
        """After the oldest frames left: forget first/last frames that left with them.

        A latest frame with a field leaves only with every other frame that has it (they
        are all older), so a count of zero says it left. An earliest one that left is
        replaced by scanning forward from the new oldest frame.
        """
        first = self.keys[0]
        if self.n_steps == 0:
            self.first_steps = self.last_steps = None
        elif self.first_steps is not None and TIME_ORDER(self.first_steps) < first:
            self.first_steps = next(f for f in self.frames if f.steps is not None)
        if self.n_env == 0:
            self.last_env = None
        if self.n_alt == 0:
            self.first_alt = self.last_alt = None
        elif self.first_alt is not None and TIME_ORDER(self.first_alt) < first:
            self.first_alt = next(
                f for f in self.frames if f.env is not None and f.env.altitude_m is not None
            )
        for i, n in enumerate(self.n_fields):
            if n == 0:
                self.last_fields[i] = None

    def rebase(self, origin_ms: int) -> None:
        """Recompute every aggregate from the frames held, with ``x`` from ``origin_ms``."""
        self._reset()
        for key, frame in zip(self.keys, self.frames, strict=True):
            self._add(frame, key, origin_ms)

    def freeze(self) -> PartSummary:
        """The aggregates as they are now; raises :class:`IndexError` when the part is empty."""
        return PartSummary(
            device=self.device,
            count=len(self.frames),
            first=self.frames[0],
            last=self.frames[-1],
            n_hr=self.n_hr,
            sx=self.sx,
            sxx=self.sxx,
            sy=self.sy,
            sxy=self.sxy,
            n_hrv=self.n_hrv,
            s_hrv=self.s_hrv,
            n_spo2=self.n_spo2,
            s_spo2=self.s_spo2,
            n_skin=self.n_skin,
            s_skin=self.s_skin,
            n_resp=self.n_resp,
            s_resp=self.s_resp,
            n_steps=self.n_steps,
            s_steps=self.s_steps,
            first_steps=self.first_steps,
            last_steps=self.last_steps,
            n_alt=self.n_alt,
            first_alt=self.first_alt,
            last_alt=self.last_alt,
            last_env=self.last_env,
            last_fields=tuple(self.last_fields),
            tail=tuple(self.frames[-TAIL_FRAMES:]),
        )


def _earlier(held: Frame | None, frame: Frame, key: Key) -> Frame:
    return frame if held is None or key < TIME_ORDER(held) else held


def _later(held: Frame | None, frame: Frame, key: Key) -> Frame:
    return frame if held is None or key > TIME_ORDER(held) else held
