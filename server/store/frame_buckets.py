"""Frames packed for storage: one compact item per (user, device, minute), shared by both stores.

Storing one item per frame made every 1 Hz frame a DynamoDB write request unit and ~220
bytes on disk. A bucket holds every frame one device took in one UTC minute
(:data:`BUCKET_MS`), packed by :mod:`server.store.frame_payload`: about 10 bytes a frame, so
one write unit carries a minute at 1 Hz.

A bucket is stored in parts of at most :data:`PART_FRAMES` frames, so a device streaming
faster than 1 Hz never makes one DynamoDB item grow past a part. :func:`add` puts new frames
into parts, never overwriting: a frame whose key ``(ts, device, seq)`` is stored already is
dropped (the first write of a key wins, as with one item per frame), and it can only be in a
part whose time range holds its ``ts``. Frames later than everything stored (a device
streaming in time order) need no stored frame at all: they are appended to the last part as
one more chunk, without decoding it. Only a resend or a late frame decodes the parts whose
range holds it.

Everything here is pure; :func:`add` raises :class:`ValueError` on a payload it did not make.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from brain.model import TIME_ORDER, Frame
from server.store import codec, frame_payload as payloads

BUCKET_MS = 60_000
"""Width of a bucket: one minute, 60 frames at 1 Hz."""

_TS, _DEVICE = operator.attrgetter("ts"), operator.attrgetter("device")

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
        times = list(map(_TS, frames))
        return cls(number, len(frames), min(times), max(times))

    def plus(self, frames: Sequence[Frame]) -> PartInfo:
        """The info of this part once ``frames`` (new to it, at least one) are added."""
        times = list(map(_TS, frames))
        return PartInfo(
            self.number,
            self.count + len(frames),
            min(self.first_ts, *times),
            max(self.last_ts, *times),
        )

    def may_hold(self, frame: Frame) -> bool:
        """Whether ``frame`` could be stored in this part (its ts is in the part's range)."""
        return self.first_ts <= frame.ts <= self.last_ts

    def expires_at(self, retention_days: int) -> int:
        """The part's expiry (epoch s): that of its newest frame, so no frame goes early.

        Reads still leave out each frame past its own retention (:func:`codec.expires_at`).
        """
        return self.last_ts // 1000 + retention_days * codec.SECONDS_PER_DAY


@dataclass(frozen=True, slots=True)
class StoredPart:
    """A part as stored: its info, its payload, the payload's chunk count, and the version
    of the stored row or item (DynamoDB writes are conditional on it; SQLite keeps 0)."""

    info: PartInfo
    payload: bytes
    chunks: int
    version: int = 0


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


def encode(bucket: BucketId, frames: Sequence[Frame]) -> bytes:
    """The payload of a part holding ``frames`` (oldest first) of ``bucket``, one chunk.

    Raises :class:`ValueError` on a frame that belongs to another bucket.
    """
    _check(bucket, frames)
    return payloads.encode(bucket.start_ms, frames)


def decode(device: str, start_ms: int, payload: bytes) -> list[Frame]:
    """The frames of a part's payload, oldest first; raises :class:`ValueError`."""
    return payloads.decode(device, start_ms, payload)


def _check(bucket: BucketId, frames: Sequence[Frame]) -> None:
    start = bucket.start_ms
    times = list(map(_TS, frames))
    if (
        times
        and start <= min(times)
        and max(times) < start + BUCKET_MS
        and set(map(_DEVICE, frames)) == {bucket.device}
    ):
        return
    for frame in frames:
        if frame.device != bucket.device or not start <= frame.ts < start + BUCKET_MS:
            raise ValueError(f"frame {frame.key} does not belong to bucket {bucket.sort_key(0)}")


def plan(
    bucket: BucketId, stored: Mapping[int, StoredPart], new: Iterable[Frame]
) -> dict[int, list[Frame]]:
    """The frames each part gains (number -> frames new to the bucket, oldest first).

    ``stored`` is every stored part of the bucket. A frame whose key is stored already, or
    came earlier in ``new``, is dropped; only the parts whose time range holds a new
    frame's ``ts`` are decoded to know. The rest fill the last part up to
    :data:`PART_FRAMES`, then new parts. An empty result means nothing is new.
    Raises :class:`ValueError` on a frame of another bucket or a payload not ours.
    """
    candidates = _distinct_in_time_order(new)
    if not candidates:
        return {}
    _check(bucket, candidates)
    low, high = candidates[0].ts, candidates[-1].ts
    stored_keys: set[FrameKey] = set()
    for part in stored.values():
        info = part.info
        if info.first_ts <= high and low <= info.last_ts and any(map(info.may_hold, candidates)):
            decoded = payloads.decode(bucket.device, bucket.start_ms, part.payload)
            stored_keys.update(map(frame_key, decoded))
    fresh = candidates
    if stored_keys:
        fresh = [frame for frame in candidates if frame_key(frame) not in stored_keys]
    if not fresh:
        return {}
    last = max(stored) if stored else None
    if last is not None and stored[last].info.count < PART_FRAMES:
        number, room = last, PART_FRAMES - stored[last].info.count
    else:
        number, room = (0 if last is None else last + 1), PART_FRAMES
    gains = {number: fresh[:room]}
    for start in range(room, len(fresh), PART_FRAMES):
        number += 1
        gains[number] = fresh[start : start + PART_FRAMES]
    return gains


def _distinct_in_time_order(new: Iterable[Frame]) -> list[Frame]:
    """``new`` sorted by :data:`~brain.model.TIME_ORDER`, the first of each key kept."""
    frames = list(new)
    times = list(map(_TS, frames))
    if not any(map(operator.ge, times, times[1:])):
        return frames  # each later than the one before (a device streaming): nothing to do
    candidates: list[Frame] = []
    seen: set[FrameKey] = set()
    for frame in sorted(frames, key=TIME_ORDER):
        key = frame_key(frame)
        if key not in seen:
            seen.add(key)
            candidates.append(frame)
    return candidates


def add(
    bucket: BucketId, stored: Mapping[int, StoredPart], new: Iterable[Frame]
) -> dict[int, StoredPart]:
    """The parts to write (number -> part as it is to be stored, version + 1) to add
    ``new`` to the bucket whose stored parts are ``stored``; empty when nothing is new.

    A part gains one chunk of its new frames, or is re-encoded as one chunk when it would
    otherwise exceed :data:`~server.store.frame_payload.MAX_CHUNKS` chunks or is full (a
    full part is never written again by frames in time order). Raises :class:`ValueError`.
    """
    changed = {}
    for number, frames in plan(bucket, stored, new).items():
        old = stored.get(number)
        if old is None:
            info, payload, chunks = PartInfo.of(number, frames), encode(bucket, frames), 1
        else:
            info = old.info.plus(frames)
            if old.chunks >= payloads.MAX_CHUNKS or info.count >= PART_FRAMES:
                payload, chunks = payloads.compact(old.payload, bucket.start_ms, frames), 1
            else:
                payload = payloads.append(old.payload, bucket.start_ms, frames)
                chunks = old.chunks + 1
        version = 0 if old is None else old.version
        changed[number] = StoredPart(info, payload, chunks, version + 1)
    return changed


def group(rows: Iterable[tuple[int, str, Frame]]) -> dict[BucketId, list[tuple[int, Frame]]]:
    """Rows ``(index, user_id, frame)`` grouped by bucket, each keeping its row index."""
    by_key: dict[tuple[str, str, int], list[tuple[int, Frame]]] = {}
    # Rows come a message at a time: most are of the bucket of the row before them, which
    # a comparison of user, device and ts finds without making the row's bucket key.
    user = device = ""
    start = end = 0
    current: list[tuple[int, Frame]] = []
    for index, user_id, frame in rows:
        ts = frame.ts
        if start <= ts < end and frame.device == device and user_id == user:
            current.append((index, frame))
            continue
        user, device, start = user_id, frame.device, ts - ts % BUCKET_MS
        end = start + BUCKET_MS
        current = by_key.setdefault((user, device, start), [])
        current.append((index, frame))
    return {BucketId(*key): indexed for key, indexed in by_key.items()}


def between(
    frames: Iterable[Frame], start_ms: int, end_ms: int, now_ms: int, days: int
) -> list[Frame]:
    """The ``frames`` with ``start_ms <= ts < end_ms`` still within retention at ``now_ms``."""
    # Within retention: codec.expires_at(frame, days) >= now_ms // 1000, which for an
    # integer ts is ts >= (now_ms // 1000 - days * SECONDS_PER_DAY) * 1000.
    kept_from = (now_ms // 1000 - days * codec.SECONDS_PER_DAY) * 1000
    low = max(start_ms, kept_from)
    return [frame for frame in frames if low <= frame.ts < end_ms]
