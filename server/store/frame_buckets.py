"""Frames packed for storage: one compact item per (user, device, minute), shared by both stores.

Storing one item per frame made every 1 Hz frame a DynamoDB write request unit and ~220
bytes on disk. A bucket holds every frame one device took in one UTC minute
(:data:`BUCKET_MS`), column by column (all ``hr`` values, then all ``hrv`` values, ...) as
orjson, numbers as scaled integer deltas where that is exact, compressed with zlib: a
minute of 1 Hz frames is 550 to 750 bytes, about 10 bytes a frame (one frame as JSON is
about 220), so one write unit carries the whole minute.

A bucket is stored in parts of at most :data:`PART_FRAMES` frames, so a device streaming
faster than 1 Hz never makes one write re-encode (or one DynamoDB item grow to) more than a
part: frames arriving in time order only ever touch the last, open part. :func:`place` puts
new frames into parts, never overwriting: a frame whose key ``(ts, device, seq)`` is stored
already is dropped (the first write of a key wins, as with one item per frame), and it can
only be in a part whose time range holds its ``ts`` (:func:`parts_to_read` names those).

Everything here is pure; :func:`decode` raises :class:`ValueError` on a payload it did not
make.
"""

from __future__ import annotations

import itertools
import math
import operator
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import orjson

from brain.model import TIME_ORDER, Env, Frame
from server.store import codec

BUCKET_MS = 60_000
"""Width of a bucket: one minute, 60 frames at 1 Hz."""

_FORMAT = 1
"""Version of the payload layout, stored in it so a later layout can read older buckets."""

_ZLIB_LEVEL = 6
"""zlib's default: level 9 saves under 2 % more on a minute of frames and costs twice the CPU."""

FrameKey = tuple[int, int]
"""A frame's identity inside a bucket (the device is the bucket's): ``(ts, seq)``."""


PART_FRAMES = 120
"""Most frames in one part: two minutes at 1 Hz (so a 1 Hz minute is one part, one item)."""


@dataclass(frozen=True, slots=True)
class PartInfo:
    """What a store knows of a stored part without reading its payload."""

    number: int
    count: int
    first_ts: int
    last_ts: int

    @classmethod
    def of(cls, number: int, frames: Sequence[Frame]) -> PartInfo:
        """The info of part ``number`` holding ``frames`` (at least one)."""
        return cls(number, len(frames), min(f.ts for f in frames), max(f.ts for f in frames))

    def may_hold(self, frame: Frame) -> bool:
        """Whether ``frame`` could be stored in this part (its ts is in the part's range)."""
        return self.first_ts <= frame.ts <= self.last_ts


@dataclass(frozen=True, slots=True)
class BucketId:
    """Which bucket a frame goes to: its user, its device and the minute it starts."""

    user_id: str
    device: str
    start_ms: int

    def sort_key(self, part: int) -> str:
        """The sort key of part ``part``: zero-padded start, device, part (sorts by time).

        Devices are ``[A-Za-z0-9._:-]`` (the protocol's rule), so ``#`` separates cleanly.
        """
        return f"{self.start_ms:013d}#{self.device}#{part}"

    @classmethod
    def of_sort_key(cls, user_id: str, sort_key: str) -> tuple[BucketId, int]:
        """The bucket and part number a sort key names; raises :class:`ValueError`."""
        start, _, rest = sort_key.partition("#")
        device, _, part = rest.rpartition("#")
        if not device:
            raise ValueError(f"not a frame bucket key: {sort_key!r}")
        return cls(user_id, device, int(start)), int(part)


def bucket_start(ts: int) -> int:
    """The start of the bucket that holds a frame taken at ``ts`` (epoch ms)."""
    return ts - ts % BUCKET_MS


def bucket_of(user_id: str, frame: Frame) -> BucketId:
    """The bucket of ``frame`` of ``user_id``."""
    return BucketId(user_id, frame.device, bucket_start(frame.ts))


def frame_key(frame: Frame) -> FrameKey:
    """The key of ``frame`` inside its bucket."""
    return (frame.ts, frame.seq)


def expires_at(frames: Iterable[Frame], retention_days: int) -> int:
    """The bucket's expiry (epoch s): that of its newest frame, so no frame goes early.

    Reads still leave out each frame past its own retention (:func:`codec.expires_at`).
    """
    return max(codec.expires_at(frame, retention_days) for frame in frames)


def parts_to_read(parts: Sequence[PartInfo], new: Sequence[Frame]) -> set[int]:
    """The parts whose frames :func:`place` needs: those that may hold one of ``new``, and
    the last part while it has room (new frames go there)."""
    numbers = {part.number for part in parts if any(part.may_hold(f) for f in new)}
    if parts:
        last = max(parts, key=lambda part: part.number)
        if last.count < PART_FRAMES:
            numbers.add(last.number)
    return numbers


def place(
    parts: Sequence[PartInfo], loaded: Mapping[int, Sequence[Frame]], new: Iterable[Frame]
) -> dict[int, list[Frame]]:
    """The parts to write (number -> all their frames, oldest first) to add ``new``.

    ``parts`` is every stored part of the bucket and ``loaded`` the frames of (at least)
    the parts :func:`parts_to_read` names. A frame whose key is stored already, or came
    earlier in ``new``, is dropped; the rest fill the last part up to
    :data:`PART_FRAMES`, then new parts. An empty result means nothing is new.
    """
    seen = {frame_key(frame) for frames in loaded.values() for frame in frames}
    fresh = []
    for frame in sorted(new, key=TIME_ORDER):
        key = frame_key(frame)
        if key not in seen:
            seen.add(key)
            fresh.append(frame)
    if not fresh:
        return {}
    last = max(parts, key=lambda part: part.number) if parts else None
    if last is not None and last.count < PART_FRAMES:
        number, filling = last.number, list(loaded[last.number])
    else:
        number, filling = (0 if last is None else last.number + 1), []
    changed: dict[int, list[Frame]] = {}
    for frame in fresh:
        if len(filling) >= PART_FRAMES:
            changed[number] = filling
            number, filling = number + 1, []
        filling.append(frame)
    changed[number] = filling
    return {n: sorted(frames, key=TIME_ORDER) for n, frames in changed.items()}


_READINGS = ("hr", "hrv", "steps", "spo2", "skin_temp", "resp_rate")
"""The frame fields stored as columns of their own (``ts``, ``seq`` and ``env`` are apart)."""

_ENV_READINGS = ("altitude_m", "temp_c", "humidity_pct", "speed_mps", "weather")


def encode(bucket: BucketId, frames: Sequence[Frame]) -> bytes:
    """The stored payload of a bucket's frames (all of ``bucket``'s device and minute).

    Columns: ``t`` the offsets from the bucket start, ``q`` the sequence numbers (left out
    when all are 0), one column per reading present (``None`` where a frame lacks it),
    ``env`` (``1`` where a frame has an environment) and ``env.<name>`` for its readings.
    Raises :class:`ValueError` on a frame that belongs to another bucket.
    """
    start = bucket.start_ms
    for frame in frames:
        if frame.device != bucket.device or not start <= frame.ts < start + BUCKET_MS:
            raise ValueError(f"frame {frame.key} does not belong to bucket {bucket.sort_key(0)}")
    columns: dict[str, list[Any]] = {"t": [frame.ts - start for frame in frames]}
    seqs = [frame.seq for frame in frames]
    if any(seqs):
        columns["q"] = seqs
    for name in _READINGS:
        values = [getattr(frame, name) for frame in frames]
        if any(value is not None for value in values):
            columns[name] = values
    envs = [frame.env for frame in frames]
    if any(env is not None for env in envs):
        columns["env"] = [None if env is None else 1 for env in envs]
        for name in _ENV_READINGS:
            values = [None if env is None else getattr(env, name) for env in envs]
            if any(value is not None for value in values):
                columns[f"env.{name}"] = values
    packed = {name: _pack_column(values) for name, values in columns.items()}
    return zlib.compress(orjson.dumps({"v": _FORMAT, "c": packed}), _ZLIB_LEVEL)


def decode(device: str, start_ms: int, payload: bytes) -> list[Frame]:
    """The frames :func:`encode` packed into ``payload`` for ``device``'s bucket at ``start_ms``.

    Raises :class:`ValueError` when ``payload`` is not such a bucket.
    """
    try:
        document = orjson.loads(zlib.decompress(payload))
        if document["v"] != _FORMAT:
            raise ValueError(f"unknown frame bucket format {document['v']!r}")
        columns = {name: _unpack_column(packed) for name, packed in document["c"].items()}
        offsets = columns.pop("t")
        seqs = columns.pop("q", None)
        has_env = columns.pop("env", None)
        env_columns = [
            (name.removeprefix("env."), columns.pop(name))
            for name in list(columns)
            if name.startswith("env.")
        ]
        readings = list(columns.items())
        frames = []
        for index, offset in enumerate(offsets):
            env = None
            if has_env is not None and has_env[index] is not None:
                env = Env(**{n: c[index] for n, c in env_columns if c[index] is not None})
            fields = {name: column[index] for name, column in readings if column[index] is not None}
            frames.append(
                Frame(
                    ts=start_ms + offset,
                    device=device,
                    seq=0 if seqs is None else seqs[index],
                    env=env,
                    **fields,
                )
            )
    except (zlib.error, orjson.JSONDecodeError, KeyError, TypeError, IndexError) as error:
        raise ValueError(f"not a frame bucket: {error}") from error
    return frames


_MAX_DECIMALS = 3
"""Decimals a float column may have to be stored as scaled integer deltas (sensors report
one or two; a column with more is kept as it is)."""


def _pack_column(values: list[Any]) -> list[Any] | dict[str, Any]:
    """A column as ``{"s": decimals, "d": deltas}`` when its values are all integers, or all
    finite floats that survive scaling by ``10**decimals`` exactly; else as it is.

    Deltas of slowly changing readings are small integers that zlib packs a third tighter
    than the readings themselves. ``s`` 0 means integers; a float column gets at least one
    decimal, so its values come back as floats.
    """
    kinds = set(map(type, values))
    if kinds == {int}:
        scaled: list[int] = values
        decimals = 0
    elif kinds == {float} and all(map(math.isfinite, values)):
        for decimals in range(1, _MAX_DECIMALS + 1):
            scale = 10**decimals
            scaled = [round(value * scale) for value in values]
            if all(map(operator.eq, map(operator.truediv, scaled, repeat(scale)), values)):
                break
        else:
            return values
    else:
        return values
    return {"s": decimals, "d": [scaled[0], *map(operator.sub, scaled[1:], scaled)]}


def _unpack_column(packed: list[Any] | dict[str, Any]) -> list[Any]:
    """The column :func:`_pack_column` made ``packed`` from."""
    if isinstance(packed, list):
        return packed
    decimals, deltas = int(packed["s"]), packed["d"]
    totals = list(itertools.accumulate(deltas))
    if decimals == 0:
        return totals
    scale = 10**decimals
    return [total / scale for total in totals]


def group(rows: Iterable[tuple[int, str, Frame]]) -> dict[BucketId, list[tuple[int, Frame]]]:
    """Rows ``(index, user_id, frame)`` grouped by bucket, each keeping its row index."""
    buckets: dict[BucketId, list[tuple[int, Frame]]] = {}
    for index, user_id, frame in rows:
        buckets.setdefault(bucket_of(user_id, frame), []).append((index, frame))
    return buckets


def between(
    frames: Iterable[Frame], start_ms: int, end_ms: int, now_ms: int, days: int
) -> list[Frame]:
    """The ``frames`` with ``start_ms <= ts < end_ms`` still within retention at ``now_ms``."""
    return [
        frame
        for frame in frames
        if start_ms <= frame.ts < end_ms
        and codec.expires_at(frame, days) >= now_ms // 1000  # within retention
    ]
