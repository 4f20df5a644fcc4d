"""Compacting a part column by column (without building its stored frames) writes the very
bytes that decoding it, adding the new frames and encoding the lot wrote before."""

from __future__ import annotations

import hashlib
import zlib

import orjson
import pytest
from hypothesis import given, settings, strategies as st

from brain.model import TIME_ORDER, Env, Frame
from server.store import frame_payload as payloads

T0 = 1_750_000_020_000


def reference(payload: bytes, frames: list[Frame]) -> bytes:
    """The compaction as it was: every frame decoded, sorted with the new ones, encoded."""
    everything = payloads.decode("w1", T0, payload)
    return payloads.encode(T0, sorted([*everything, *frames], key=TIME_ORDER))


def sample(lo: int, hi: int) -> list[Frame]:
    """Frames lo..hi of a fixed series that uses every column, ints and floats, and envs."""
    frames = []
    for i in range(lo, hi):
        env = None
        if i % 3 == 0:
            env = Env(temp_c=20.5 + i / 10, weather="rain" if i % 2 else None, speed_mps=i)
        frames.append(
            Frame(
                ts=T0 + i * 450,
                hr=60.0 + i % 7 if i % 5 else None,
                hrv=45.25,
                steps=i % 4,
                spo2=None if i % 2 else 97.0,
                skin_temp=33.123 if i == 7 else None,
                resp_rate=14 if i % 9 == 0 else None,
                device="w1",
                seq=i % 3,
                env=env,
            )
        )
    return frames


def test_compaction_writes_the_bytes_the_previous_release_wrote() -> None:
    stored = sample(0, 60)
    payload = payloads.encode(T0, stored[:20])
    payload = payloads.append(payload, T0, stored[40:60])
    payload = payloads.append(payload, T0, stored[20:40][::-1])
    # Digests of the payloads the release before column-wise compaction made of these frames.
    assert hashlib.sha256(payload).hexdigest() == (
        "7568e2119c188e0edcbc23d4072e7ea1f55e2ae7ab14692fb69f15c65708cb49"
    )
    compacted = payloads.compact(payload, T0, sample(60, 120))
    assert hashlib.sha256(compacted).hexdigest() == (
        "981878d34edf7cdbe0d1ee70454425044795ad70cc896d74d6a1644b8d6bb249"
    )
    assert payloads.decode("w1", T0, compacted) == sample(0, 120)


def test_a_payload_of_the_first_layout_compacts_as_it_decodes() -> None:
    columns = {"t": {"s": 0, "d": [0, 1000, 1000]}, "q": [0, 1, 0],
               "hr": {"s": 1, "d": [605, 0, 0]}}  # fmt: skip
    first_layout = zlib.compress(orjson.dumps({"v": 1, "c": columns}))
    later = [Frame(ts=T0 + 500, hrv=40.0, device="w1"), Frame(ts=T0 + 9000, hr=61.0, device="w1")]
    assert payloads.compact(first_layout, T0, later) == reference(first_layout, later)


@pytest.mark.parametrize(
    "payload",
    [b"", b"\x02", b"\x02\x05abc", zlib.compress(b"[1, 2]"), payloads.CHUNKED.to_bytes() + b"\x00"],
)
def test_compacting_what_is_not_a_payload_raises_value_error(payload: bytes) -> None:
    with pytest.raises(ValueError, match="not a frame bucket"):
        payloads.compact(payload, T0, sample(0, 2))


def test_a_chunk_that_is_not_an_object_of_columns_raises_value_error() -> None:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -13, 6, zdict=payloads._ZDICT)
    chunk = compressor.compress(b"[1, 2]") + compressor.flush()
    odd = bytes((payloads.CHUNKED, len(chunk))) + chunk
    with pytest.raises(ValueError, match="not a frame bucket"):
        payloads.decode("w1", T0, odd)
    with pytest.raises(ValueError, match="not a frame bucket"):
        payloads.compact(odd, T0, sample(0, 2))


def test_a_payload_with_an_unknown_column_is_refused_as_decode_refuses_it() -> None:
    payload = payloads.encode(T0, sample(0, 3))
    compressor = zlib.compressobj(6, zlib.DEFLATED, -13, 6, zdict=payloads._ZDICT)
    body = orjson.dumps({"t": [0, 1], "mood": [1, 2]})
    chunk = compressor.compress(body) + compressor.flush()
    odd = payload + bytes((len(chunk),)) + chunk
    with pytest.raises(ValueError, match="not a frame bucket"):
        payloads.decode("w1", T0, odd)
    with pytest.raises(ValueError, match="not a frame bucket"):
        payloads.compact(odd, T0, sample(10, 12))


readings = st.one_of(
    st.none(),
    st.integers(min_value=0, max_value=250),
    st.floats(min_value=0, max_value=250, allow_nan=False).map(lambda x: round(x, 1)),
    st.floats(min_value=0, max_value=250, allow_nan=False).map(lambda x: round(x, 3)),
    st.floats(allow_nan=False),
)
envs = st.one_of(
    st.none(),
    st.builds(
        Env,
        temp_c=readings,
        altitude_m=st.one_of(st.none(), st.integers(-500, 9000)),
        weather=st.one_of(st.none(), st.sampled_from(["rain", "é"])),
    ),
)


@st.composite
def parts_and_new_frames(draw: st.DrawFn) -> tuple[bytes, list[Frame]]:
    """A stored part of one to four chunks (frames in any order within a chunk), and new
    frames of keys it does not hold, in time order as a write brings them."""
    keys = draw(
        st.lists(
            st.tuples(st.integers(0, 59_999), st.integers(0, 3)), min_size=2, max_size=200,
            unique=True,
        )
    )  # fmt: skip
    frames = [
        Frame(
            ts=T0 + offset,
            seq=seq,
            device="w1",
            hr=draw(readings),
            steps=draw(st.one_of(st.none(), st.integers(0, 100))),
            resp_rate=draw(readings),
            env=draw(envs),
        )
        for offset, seq in keys
    ]
    split = draw(st.integers(1, len(frames) - 1))
    stored, new = frames[:split], sorted(frames[split:], key=TIME_ORDER)
    cuts = sorted(draw(st.lists(st.integers(1, len(stored)), max_size=3)))
    chunks = [stored[a:b] for a, b in zip([0, *cuts], [*cuts, len(stored)], strict=True) if a < b]
    payload = b""
    for chunk in chunks:
        payload = payloads.append(payload, T0, chunk)
    return payload, new


@settings(max_examples=300, deadline=None)
@given(parts_and_new_frames())
def test_compaction_writes_what_decoding_and_encoding_every_frame_writes(
    case: tuple[bytes, list[Frame]],
) -> None:
    payload, new = case
    assert payloads.compact(payload, T0, new) == reference(payload, new)
