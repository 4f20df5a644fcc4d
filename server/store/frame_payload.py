"""The bytes of a stored bucket part: packed frames, appended to chunk by chunk.

A part's payload is a marker byte (:data:`CHUNKED`) and a list of **chunks**, each a varint
length and one batch of frames packed column by column (all ``hr`` values, then all ``hrv``
values, ...) as orjson, numbers as scaled integer deltas where that is exact, compressed with
raw deflate primed by a fixed dictionary of the column names (:data:`_ZDICT`, so a chunk of a
few frames does not pay for its names). A minute of 1 Hz frames in one chunk is 550 to 750
bytes, about 10 bytes a frame.

Why chunks: a write that adds ten frames to a part of a hundred appends one chunk of ten
(:func:`append`), instead of decoding and re-encoding the hundred; the store re-encodes a
part as one chunk (:func:`compact`, column by column, the same bytes :func:`encode` makes of
all its frames) only every :data:`MAX_CHUNKS` writes or once it is full, which keeps the
stored bytes close to those of one chunk. :func:`decode` gives the frames of all chunks in
time order, so a payload decodes to the same frames however its writes were split.

Payloads of the first packed layout (one zlib document, ``{"v": 1, "c": columns}``) still
decode. Everything here is pure; :func:`decode` and :func:`chunk_count` raise
:class:`ValueError` on a payload they did not make.
"""

from __future__ import annotations

import itertools
import math
import operator
import zlib
from collections.abc import Iterable, Sequence
from itertools import repeat
from typing import Any

import orjson

from brain.model import TIME_ORDER, Env, Frame, new_frame

CHUNKED = 2
"""First byte of a chunked payload (a payload of the first layout starts with zlib's 0x78)."""

_FORMAT_1 = 1
"""Version inside a payload of the first layout: one zlib document, never appended to."""

MAX_CHUNKS = 4
"""Chunks a part may have before the write that would add one re-encodes it whole. A chunk
of a few frames costs ~80 bytes more than the same frames inside a big one, so four keep a
1 Hz minute written a frame at a time under ~750 bytes (one write unit) while a write
re-encodes a part only every fourth time."""

_ZLIB_LEVEL = 6
"""zlib's default: level 9 saves under 2 % more on a minute of frames and costs twice the CPU."""

_WINDOW_BITS = 13
_MEMORY_LEVEL = 6
"""A compressor of an 8 KB window (a chunk's JSON is 1-8 KB) and a smaller hash: made in
1 µs instead of 13 (zlib's default allocates ~260 KB per compressor), same bytes on a
minute of frames. Decoding uses the largest window, which reads any smaller."""

_ZDICT = (
    b'"weather":[null,"rain","clear","cloudy","snow"],"env.speed_mps":{"s":1,"d":[0,'
    b'"env.humidity_pct":{"s":1,"d":[0,"env.temp_c":{"s":1,"d":[0,'
    b'"env.altitude_m":{"s":1,"d":[0,"env":[1,1,1,1,1,1,1,1],'
    b'"resp_rate":{"s":1,"d":[0,0,0,0,"skin_temp":{"s":2,"d":[0,0,0,0,'
    b'"spo2":{"s":1,"d":[0,0,0,0,"steps":{"s":0,"d":[0,0,0,0,'
    b'"hrv":{"s":1,"d":[0,0,0,0,"hr":{"s":1,"d":[0,0,0,0,'
    b'"q":{"s":0,"d":[0,1,1,1,1],{"t":{"s":0,"d":[0,1000,1000,1000,1000,1000,1000,'
)
"""Preset deflate dictionary: what chunks say most (column names, their packing, typical
deltas), most frequent last. Part of the layout: never change it, add a marker instead."""

_READINGS = ("hr", "hrv", "steps", "spo2", "skin_temp", "resp_rate")
"""The frame fields stored as columns of their own (``ts``, ``seq`` and ``env`` are apart)."""

_ENV_READINGS = ("altitude_m", "temp_c", "humidity_pct", "speed_mps", "weather")

_NOT_OURS = (zlib.error, orjson.JSONDecodeError, AttributeError, KeyError, TypeError, IndexError)
"""What reading bytes we did not write may raise (reported as :class:`ValueError`)."""

_READING_SET = frozenset(_READINGS)
_ENV_SET = frozenset(_ENV_READINGS)
_LAYOUT = ("t", "q", *_READINGS, "env", *(f"env.{name}" for name in _ENV_READINGS))
"""Every column a chunk may have, in the order a chunk stores them."""
_LAYOUT_SET = frozenset(_LAYOUT)
_TS, _SEQ, _ENV = operator.attrgetter("ts"), operator.attrgetter("seq"), operator.attrgetter("env")
_READING_GETTERS = tuple((name, operator.attrgetter(name)) for name in _READINGS)


def encode(start_ms: int, frames: Sequence[Frame]) -> bytes:
    """A payload of one chunk holding ``frames`` (of the bucket starting at ``start_ms``)."""
    return append(b"", start_ms, frames)


def append(payload: bytes, start_ms: int, frames: Sequence[Frame]) -> bytes:
    """``payload`` (``b""``: none yet) with one chunk more, holding ``frames``.

    Raises :class:`ValueError` when ``payload`` is of the first layout (it is re-encoded
    instead, see :func:`chunk_count`).
    """
    if payload and payload[0] != CHUNKED:
        raise ValueError("a payload of the first layout cannot be appended to")
    return (payload or bytes((CHUNKED,))) + _chunk(_columns(start_ms, frames))


def compact(payload: bytes, start_ms: int, frames: Sequence[Frame]) -> bytes:
    """A payload of one chunk holding the frames of ``payload`` and ``frames`` (new to it),
    in time order: byte for byte what :func:`encode` makes of them, without building a
    :class:`Frame` of each stored one (a full part is compacted on every write of a fast
    device). Raises :class:`ValueError` when ``payload`` is not a payload of frames.
    """
    try:
        stored = [_unpacked(packed) for packed in _packed_chunks(payload)]
    except _NOT_OURS as error:
        raise ValueError(f"not a frame bucket: {error}") from error
    merged = _in_time_order(_joined([*stored, _all_columns(start_ms, frames)]))
    return bytes((CHUNKED,)) + _chunk(_packed(merged))


def _chunk(packed: dict[str, Any]) -> bytes:
    """One chunk as stored: its varint length, then the packed columns' JSON, deflated."""
    compressor = zlib.compressobj(
        _ZLIB_LEVEL, zlib.DEFLATED, -_WINDOW_BITS, _MEMORY_LEVEL, zdict=_ZDICT
    )
    chunk = compressor.compress(orjson.dumps(packed)) + compressor.flush()
    return _varint(len(chunk)) + chunk


def chunk_count(payload: bytes) -> int:
    """How many chunks ``payload`` holds; a payload of the first layout counts as
    :data:`MAX_CHUNKS` (so the next write re-encodes it). Raises :class:`ValueError`."""
    if not payload or payload[0] != CHUNKED:
        return MAX_CHUNKS
    return len(_chunks(payload))


def decode(device: str, start_ms: int, payload: bytes) -> list[Frame]:
    """The frames packed into ``payload`` for ``device``'s bucket at ``start_ms``, in time
    order. Raises :class:`ValueError` when ``payload`` is not such a payload."""
    try:
        chunks = _packed_chunks(payload)
        if len(chunks) == 1:
            return _frames(device, start_ms, chunks[0])
        frames = [frame for packed in chunks for frame in _frames(device, start_ms, packed)]
        return sorted(frames, key=TIME_ORDER)
    except _NOT_OURS as error:
        raise ValueError(f"not a frame bucket: {error}") from error


def _packed_chunks(payload: bytes) -> list[Any]:
    """The packed columns of each chunk of ``payload`` (of the first layout: its one
    document). Raises :class:`ValueError`, :class:`zlib.error`, :class:`KeyError`..."""
    if payload and payload[0] == CHUNKED:
        found = []
        for chunk in _chunks(payload):
            decompressor = zlib.decompressobj(-15, zdict=_ZDICT)
            found.append(orjson.loads(decompressor.decompress(chunk) + decompressor.flush()))
        return found
    document = orjson.loads(zlib.decompress(payload))
    if document["v"] != _FORMAT_1:
        raise ValueError(f"unknown frame bucket format {document['v']!r}")
    return [document["c"]]


def _varint(value: int) -> bytes:
    """``value`` (>= 0) in LEB128: seven bits a byte, low first."""
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _chunks(payload: bytes) -> list[bytes]:
    """The chunks of a chunked payload; raises :class:`ValueError` on a cut one."""
    chunks, position = [], 1
    while position < len(payload):
        length = shift = 0
        while True:
            if position >= len(payload):
                raise ValueError("not a frame bucket: a chunk length is cut short")
            byte = payload[position]
            position += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        if position + length > len(payload):
            raise ValueError("not a frame bucket: a chunk is cut short")
        chunks.append(payload[position : position + length])
        position += length
    if not chunks:
        raise ValueError("not a frame bucket: no chunk")
    return chunks


def _columns(start_ms: int, frames: Sequence[Frame]) -> dict[str, Any]:
    """The packed columns of ``frames``: ``t`` the offsets from the bucket start, ``q`` the
    sequence numbers (left out when all are 0), one column per reading present (``None``
    where a frame lacks it), ``env`` (``1`` where a frame has an environment) and
    ``env.<name>`` for its readings."""
    return _packed(_all_columns(start_ms, frames))


def _all_columns(start_ms: int, frames: Sequence[Frame]) -> dict[str, list[Any]]:
    """Every column of ``frames`` (:data:`_LAYOUT`), even those all ``None`` or 0; the
    ``env.<name>`` columns only when a frame has an environment."""
    columns: dict[str, list[Any]] = {
        "t": [ts - start_ms for ts in map(_TS, frames)],
        "q": list(map(_SEQ, frames)),
    }
    for name, value_of in _READING_GETTERS:
        columns[name] = list(map(value_of, frames))
    envs = list(map(_ENV, frames))
    columns["env"] = [None if env is None else 1 for env in envs]
    if envs.count(None) != len(envs):
        for name in _ENV_READINGS:
            columns[f"env.{name}"] = [None if env is None else getattr(env, name) for env in envs]
    return columns


def _packed(columns: dict[str, list[Any]]) -> dict[str, Any]:
    """The stored form of a chunk's columns (:func:`_all_columns`, in :data:`_LAYOUT` order):
    ``q`` left out when all 0, a reading when all ``None``, ``env`` and its readings when
    no frame has an environment; each column packed by :func:`_pack_column`."""
    kept = {"t": columns["t"]}
    if any(columns["q"]):
        kept["q"] = columns["q"]
    for name in _READINGS:
        values = columns[name]
        if values.count(None) != len(values):
            kept[name] = values
    envs = columns["env"]
    if envs.count(None) != len(envs):
        kept["env"] = envs
        for name in _ENV_READINGS:
            values = columns[f"env.{name}"]
            if values.count(None) != len(values):
                kept[f"env.{name}"] = values
    return {name: _pack_column(values) for name, values in kept.items()}


def _unpacked(packed: dict[str, Any]) -> dict[str, list[Any]]:
    """The columns of one stored chunk, unpacked, cut to the length of ``t``.

    Raises :class:`ValueError` on a column it does not know or one shorter than ``t``.
    """
    columns = {name: _unpack_column(column) for name, column in packed.items()}
    count = len(columns["t"])
    if not columns.keys() <= _LAYOUT_SET:
        raise ValueError(f"not a frame bucket: unknown columns {sorted(packed)}")
    if any(len(column) < count for column in columns.values()):
        raise ValueError("not a frame bucket: a column is cut short")
    return {name: column[:count] for name, column in columns.items()}


def _joined(chunks: list[dict[str, list[Any]]]) -> dict[str, list[Any]]:
    """The columns of several chunks one after the other, every column of :data:`_LAYOUT`
    (0 or ``None`` where a chunk lacks it); an environment's readings only where ``env``
    says there is one, as :func:`decode` reads them."""
    counts = [len(chunk["t"]) for chunk in chunks]
    joined: dict[str, list[Any]] = {}
    for name in _LAYOUT:
        fill = 0 if name == "q" else None
        column: list[Any] = []
        for chunk, count in zip(chunks, counts, strict=True):
            found = chunk.get(name)
            column += [fill] * count if found is None else found
        joined[name] = column
    envs = joined["env"] = [None if env is None else 1 for env in joined["env"]]
    if envs.count(None) == len(envs):
        return joined  # no environment at all: its readings are not stored
    for name in _ENV_READINGS:
        values = joined[f"env.{name}"]
        joined[f"env.{name}"] = [
            None if e is None else v for e, v in zip(envs, values, strict=True)
        ]
    return joined


def _in_time_order(columns: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """``columns`` with their rows sorted by ``(t, q)`` (stable: what sorting their frames
    by :data:`~brain.model.TIME_ORDER` does within one device's bucket)."""
    keys = list(zip(columns["t"], columns["q"], strict=True))
    if not any(map(operator.gt, keys, keys[1:])):
        return columns
    order = sorted(range(len(keys)), key=keys.__getitem__)
    return {name: [column[i] for i in order] for name, column in columns.items()}


def _frames(device: str, start_ms: int, packed: dict[str, Any]) -> list[Frame]:
    """The frames of packed columns (:func:`_columns`), in their stored order.

    Raises :class:`ValueError` on a column it does not know or one shorter than ``t``.
    """
    columns = {name: _unpack_column(column) for name, column in packed.items()}
    offsets = columns.pop("t")
    count = len(offsets)
    seqs = columns.pop("q", None)
    has_env = columns.pop("env", None)
    env_columns = [
        (name.removeprefix("env."), columns.pop(name))
        for name in list(columns)
        if name.startswith("env.")
    ]
    if not columns.keys() <= _READING_SET or not {n for n, _ in env_columns} <= _ENV_SET:
        raise ValueError(f"not a frame bucket: unknown columns {sorted(packed)}")
    everything = [*columns.values(), *(c for _, c in env_columns), seqs, has_env]
    if any(column is not None and len(column) < count for column in everything):
        raise ValueError("not a frame bucket: a column is cut short")
    envs: Iterable[Env | None] = repeat(None)
    if has_env is not None:
        envs = [
            None
            if has_env[index] is None
            else Env(**{n: c[index] for n, c in env_columns if c[index] is not None})
            for index in range(count)
        ]
    nothing = repeat(None)
    return list(
        map(
            new_frame,
            [start_ms + offset for offset in offsets],
            columns.get("hr", nothing),
            columns.get("hrv", nothing),
            columns.get("steps", nothing),
            columns.get("spo2", nothing),
            columns.get("skin_temp", nothing),
            columns.get("resp_rate", nothing),
            repeat(device),
            repeat(0) if seqs is None else seqs,
            envs,
        )
    )


_MAX_DECIMALS = 3
"""Decimals a float column may have to be stored as scaled integer deltas (sensors report
one or two; a column with more is kept as it is)."""


_EXACT_INTEGERS = 2**53
"""Integers a float holds exactly: a scaled column past it is kept as floats."""


def _pack_column(values: list[Any]) -> list[Any] | dict[str, Any]:
    """A column as ``{"s": decimals, "d": deltas}`` when its values are all integers, or all
    finite floats that survive scaling by ``10**decimals`` exactly; else as it is.

    Deltas of slowly changing readings are small integers that zlib packs a third tighter
    than the readings themselves. ``s`` 0 means integers; a float column gets at least one
    decimal, so its values come back as floats.
    """
    kinds = set(map(type, values))
    if kinds == {int} and max(map(abs, values)) < _EXACT_INTEGERS:
        scaled: list[int] = values
        decimals = 0
    elif (
        kinds == {float}
        and all(map(math.isfinite, values))
        and max(map(abs, values)) < _EXACT_INTEGERS
    ):
        for decimals in range(1, _MAX_DECIMALS + 1):
            scale = 10**decimals
            scaled = list(map(round, map(operator.mul, values, repeat(scale))))
            exact = all(map(operator.eq, map(operator.truediv, scaled, repeat(scale)), values))
            # orjson writes integers of 64 bits; past 2**53 a scaled float is not exact anyway.
            if exact and max(map(abs, scaled)) < _EXACT_INTEGERS:
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
