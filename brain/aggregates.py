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
"""Environment fields whose latest value the features report (:attr:`PartSummary.last_fields`
in this order)."""

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
        "last_humidity",
        "last_speed",
        "last_steps",
        "last_temp",
        "last_weather",
        "n_alt",
        "n_env",
        "n_hr",
        "n_hrv",
        "n_humidity",
        "n_resp",
        "n_skin",
        "n_speed",
        "n_spo2",
        "n_steps",
        "n_temp",
        "n_weather",
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
        self.n_temp = self.n_humidity = self.n_speed = self.n_weather = 0
        self.first_steps: Frame | None = None
        self.last_steps: Frame | None = None
        self.first_alt: Frame | None = None
        self.last_alt: Frame | None = None
        self.last_env: Frame | None = None
        self.last_temp: Frame | None = None
        self.last_humidity: Frame | None = None
        self.last_speed: Frame | None = None
        self.last_weather: Frame | None = None

    def __len__(self) -> int:
        return len(self.frames)

    def extend(self, keys: list[Key], frames: list[Frame], origin_ms: int) -> None:
        """Append frames newer than every frame held (the common case), oldest first."""
        self.keys.extend(keys)
        self.frames.extend(frames)
        self._count(frames, origin_ms)

    def _count(self, frames: list[Frame], origin_ms: int) -> None:
        """Add ``frames`` (oldest first, newer than every frame counted) to the aggregates.

        One loop over local variables: this runs for every frame the server ingests.
        """
        n_hr, sx, sxx, sy, sxy = self.n_hr, self.sx, self.sxx, self.sy, self.sxy
        n_hrv, s_hrv, n_spo2, s_spo2 = self.n_hrv, self.s_hrv, self.n_spo2, self.s_spo2
        n_skin, s_skin, n_resp, s_resp = self.n_skin, self.s_skin, self.n_resp, self.s_resp
        n_steps, s_steps, n_env, n_alt = self.n_steps, self.s_steps, self.n_env, self.n_alt
        for f in frames:
            hr = f.hr
            if hr is not None:
                x = (f.ts - origin_ms) / MINUTE_MS
                n_hr += 1
                sx += x
                sxx += x * x
                sy += hr
                sxy += x * hr
            v = f.hrv
            if v is not None:
                n_hrv += 1
                s_hrv += v
            v = f.spo2
            if v is not None:
                n_spo2 += 1
                s_spo2 += v
            v = f.skin_temp
            if v is not None:
                n_skin += 1
                s_skin += v
            v = f.resp_rate
            if v is not None:
                n_resp += 1
                s_resp += v
            steps = f.steps
            if steps is not None:
                n_steps += 1
                s_steps += steps
                self.last_steps = f
                if self.first_steps is None:
                    self.first_steps = f
            env = f.env
            if env is not None:
                n_env += 1
                self.last_env = f
                if env.altitude_m is not None:
                    n_alt += 1
                    self.last_alt = f
                    if self.first_alt is None:
                        self.first_alt = f
                if env.temp_c is not None:
                    self.n_temp += 1
                    self.last_temp = f
                if env.humidity_pct is not None:
                    self.n_humidity += 1
                    self.last_humidity = f
                if env.speed_mps is not None:
                    self.n_speed += 1
                    self.last_speed = f
                if env.weather is not None:
                    self.n_weather += 1
                    self.last_weather = f
        self.n_hr, self.sx, self.sxx, self.sy, self.sxy = n_hr, sx, sxx, sy, sxy
        self.n_hrv, self.s_hrv, self.n_spo2, self.s_spo2 = n_hrv, s_hrv, n_spo2, s_spo2
        self.n_skin, self.s_skin, self.n_resp, self.s_resp = n_skin, s_skin, n_resp, s_resp
        self.n_steps, self.s_steps, self.n_env, self.n_alt = n_steps, s_steps, n_env, n_alt

    def insert(self, key: Key, frame: Frame, origin_ms: int) -> None:
        """Add one frame that is not held yet (the window checked) at its place in time."""
        at = bisect_left(self.keys, key)
        if at == len(self.keys):
            self.extend([key], [frame], origin_ms)
            return
        self.keys.insert(at, key)
        self.frames.insert(at, frame)
        lasts = self._lasts()
        first_steps, first_alt = self.first_steps, self.first_alt
        self._count([frame], origin_ms)
        # _count took ``frame`` for the latest frame with each of its fields, but it is older
        # than the newest frame held: keep whichever of the two is later, or earlier.
        self._set_lasts(
            tuple(_later(old, new) for old, new in zip(lasts, self._lasts(), strict=True))
        )
        has_alt = frame.env is not None and frame.env.altitude_m is not None
        self.first_steps = _earlier(first_steps, frame if frame.steps is not None else None)
        self.first_alt = _earlier(first_alt, frame if has_alt else None)

    def _lasts(self) -> tuple[Frame | None, ...]:
        return (
            self.last_steps,
            self.last_env,
            self.last_alt,
            self.last_temp,
            self.last_humidity,
            self.last_speed,
            self.last_weather,
        )

    def _set_lasts(self, lasts: tuple[Frame | None, ...]) -> None:
        (
            self.last_steps,
            self.last_env,
            self.last_alt,
            self.last_temp,
            self.last_humidity,
            self.last_speed,
            self.last_weather,
        ) = lasts

    def drop_oldest(self, count: int, origin_ms: int) -> None:
        """Remove the ``count`` oldest frames and their share of every aggregate."""
        if count <= 0:
            return
        if count >= len(self.frames):
            self.keys.clear()
            self.frames.clear()
            self._reset()  # exact zeros: no drift survives an empty part
            return
        n_hr, sx, sxx, sy, sxy = self.n_hr, self.sx, self.sxx, self.sy, self.sxy
        n_hrv, s_hrv, n_spo2, s_spo2 = self.n_hrv, self.s_hrv, self.n_spo2, self.s_spo2
        n_skin, s_skin, n_resp, s_resp = self.n_skin, self.s_skin, self.n_resp, self.s_resp
        n_steps, s_steps, n_env, n_alt = self.n_steps, self.s_steps, self.n_env, self.n_alt
        for f in self.frames[:count]:
            hr = f.hr
            if hr is not None:
                x = (f.ts - origin_ms) / MINUTE_MS
                n_hr -= 1
                sx -= x
                sxx -= x * x
                sy -= hr
                sxy -= x * hr
            v = f.hrv
            if v is not None:
                n_hrv -= 1
                s_hrv -= v
            v = f.spo2
            if v is not None:
                n_spo2 -= 1
                s_spo2 -= v
            v = f.skin_temp
            if v is not None:
                n_skin -= 1
                s_skin -= v
            v = f.resp_rate
            if v is not None:
                n_resp -= 1
                s_resp -= v
            steps = f.steps
            if steps is not None:
                n_steps -= 1
                s_steps -= steps
            env = f.env
            if env is not None:
                n_env -= 1
                if env.altitude_m is not None:
                    n_alt -= 1
                if env.temp_c is not None:
                    self.n_temp -= 1
                if env.humidity_pct is not None:
                    self.n_humidity -= 1
                if env.speed_mps is not None:
                    self.n_speed -= 1
                if env.weather is not None:
                    self.n_weather -= 1
        self.n_hr, self.sx, self.sxx, self.sy, self.sxy = n_hr, sx, sxx, sy, sxy
        self.n_hrv, self.s_hrv, self.n_spo2, self.s_spo2 = n_hrv, s_hrv, n_spo2, s_spo2
        self.n_skin, self.s_skin, self.n_resp, self.s_resp = n_skin, s_skin, n_resp, s_resp
        self.n_steps, self.s_steps, self.n_env, self.n_alt = n_steps, s_steps, n_env, n_alt
        del self.keys[:count]
        del self.frames[:count]
        self._refresh_refs()

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
        if self.n_temp == 0:
            self.last_temp = None
        if self.n_humidity == 0:
            self.last_humidity = None
        if self.n_speed == 0:
            self.last_speed = None
        if self.n_weather == 0:
            self.last_weather = None

    def rebase(self, origin_ms: int) -> None:
        """Recompute every aggregate from the frames held, with ``x`` from ``origin_ms``."""
        self._reset()
        self._count(self.frames, origin_ms)

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
            last_fields=(self.last_temp, self.last_humidity, self.last_speed, self.last_weather),
            tail=tuple(self.frames[-TAIL_FRAMES:]),
        )


def _earlier(held: Frame | None, other: Frame | None) -> Frame | None:
    if held is None or other is None:
        return other if held is None else held
    return held if TIME_ORDER(held) < TIME_ORDER(other) else other


def _later(held: Frame | None, other: Frame | None) -> Frame | None:
    if held is None or other is None:
        return other if held is None else held
    return held if TIME_ORDER(held) > TIME_ORDER(other) else other
