"""Properties of appending frames to bucket parts: however the writes are split, reordered
or resent, the stored frames are those of one write of their union."""

from __future__ import annotations

import time

from hypothesis import given, settings, strategies as st

from brain.model import Env, Frame
from server.store import frame_buckets as buckets

T0 = (int(time.time()) // 60) * 60_000
MINUTE = buckets.BucketId("alice", "w", T0)

readings = st.one_of(
    st.none(),
    st.integers(min_value=0, max_value=250),
    st.floats(min_value=0, max_value=250, allow_nan=False).map(lambda x: round(x, 1)),
    st.floats(allow_nan=False, allow_infinity=False),
)
envs = st.one_of(
    st.none(),
    st.builds(Env, temp_c=readings, weather=st.one_of(st.none(), st.sampled_from(["rain", "é"]))),
)


@st.composite
def frames_of_a_minute(draw: st.DrawFn) -> list[Frame]:
    """Up to 300 frames of one device and minute, with distinct keys (ts, seq)."""
    keys = draw(
        st.lists(
            st.tuples(st.integers(0, 59_999), st.integers(0, 3)),
            min_size=1,
            max_size=300,
            unique=True,
        )
    )
    return [
        Frame(ts=T0 + offset, seq=seq, device="w", hr=draw(readings), env=draw(envs))
        for offset, seq in keys
    ]


@st.composite
def writes_of(draw: st.DrawFn) -> tuple[list[Frame], list[list[Frame]]]:
    """Frames, and writes that bring each at least once: split anywhere, shuffled, with
    resends of frames already written or written in the same batch."""
    frames = draw(frames_of_a_minute())
    order = draw(st.permutations(frames))
    writes: list[list[Frame]] = []
    position = 0
    while position < len(order):
        size = draw(st.integers(1, 40))
        batch = list(order[position : position + size])
        position += size
        resent = draw(st.lists(st.sampled_from(order[:position]), max_size=5))
        writes.append(batch + resent)
    return frames, writes


def stored_frames(parts: dict[int, buckets.StoredPart]) -> list[Frame]:
    found = [f for part in parts.values() for f in buckets.decode("w", T0, part.payload)]
    return sorted(found, key=lambda f: (f.ts, f.seq))


@settings(max_examples=150, deadline=None)
@given(writes_of())
def test_any_split_order_and_resend_stores_the_frames_of_one_write(
    case: tuple[list[Frame], list[list[Frame]]],
) -> None:
    frames, writes = case
    parts: dict[int, buckets.StoredPart] = {}
    for batch in writes:
        changed = buckets.add(MINUTE, parts, batch)
        assert all(changed[n].version == parts.get(n, changed[n]).version + 1 - (n not in parts)
                   for n in changed)  # fmt: skip
        parts = {**parts, **changed}

    once = buckets.add(MINUTE, {}, frames)
    assert stored_frames(parts) == stored_frames(once)
    assert all(part.info.count <= buckets.PART_FRAMES for part in parts.values())
    for part in parts.values():
        held = buckets.decode("w", T0, part.payload)
        assert buckets.PartInfo.of(part.info.number, held) == part.info
    assert buckets.add(MINUTE, parts, frames) == {}  # a resend of everything writes nothing
