"""The batch parser's fast path for plain frames gives exactly what the general validator
gives: the same frames (same field types), the same rejections, in the same order."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import orjson
import pytest
from hypothesis import example, given, settings, strategies as st

from brain.model import Env, Frame, new_frame
from server import protocol as wire
from server.protocol import FrameLimits, Rejection, frames as frame_wire

NOW = 1_750_000_000_000
LIMITS = FrameLimits()
FIELDS = ("ts", "hr", "hrv", "steps", "spo2", "skin_temp", "resp_rate", "device", "seq", "env")


def reference(raws: list[Any]) -> tuple[tuple[Frame, ...], tuple[Rejection, ...]]:
    """What the general validator (:func:`server.protocol.parse_frame`) makes of each frame."""
    frames, rejected = [], []
    for index, raw in enumerate(raws):
        try:
            frames.append(wire.parse_frame(raw, now_ms=NOW, limits=LIMITS))
        except ValueError as bad:
            rejected.append(Rejection(index, *bad.args))
    return tuple(frames), tuple(rejected)


def typed(frame: Frame) -> list[tuple[type, Any]]:
    """The frame's fields with their types (``60 == 60.0``, but a stored ``int`` is not a
    stored ``float``)."""
    return [(type(value), value) for value in (getattr(frame, name) for name in FIELDS)]


def assert_same_as_reference(raws: list[Any]) -> None:
    frames, rejected = wire.parse_frames(raws, now_ms=NOW, limits=LIMITS)
    expected_frames, expected_rejected = reference(raws)
    assert frames == expected_frames
    assert [typed(f) for f in frames] == [typed(f) for f in expected_frames]
    assert rejected == expected_rejected


def edges(lo: float, hi: float) -> st.SearchStrategy[Any]:
    """Numbers at and around a range's ends, inside and outside, as ints and floats."""
    return st.one_of(
        st.sampled_from([lo, hi, lo - 1, hi + 1, lo - 0.5, hi + 0.5, (lo + hi) / 2]),
        st.sampled_from([lo, hi]).map(float),
        st.integers(int(lo) - 5, int(hi) + 5),
        st.floats(lo - 10, hi + 10),
    )


odd_values = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=3),
    st.just([]),
    st.just({}),
    st.sampled_from([float("nan"), float("inf"), -float("inf"), 2.5, -1, 2**64]),
)
devices = st.one_of(
    st.sampled_from(["w1", "lt7", "phone:a.b_c-d", "", "bad device", "x" * 64, "x" * 65]),
    st.just("ok\n"),
    st.text(max_size=5),
)
envs = st.one_of(
    st.just({}),
    st.fixed_dictionaries(
        {},
        optional={
            "temp_c": st.one_of(edges(-70, 70), odd_values),
            "weather": st.one_of(st.sampled_from(["rain", "", "x" * 33]), odd_values),
            "speed_mps": edges(0, 350),
            "wind": st.just(1),
        },
    ),
    odd_values,
)
values = {
    "ts": st.one_of(
        st.integers(NOW - LIMITS.max_age_ms - 2, NOW + LIMITS.max_future_ms + 2),
        st.sampled_from(
            [NOW, float(NOW), NOW + 0.5, NOW - LIMITS.max_age_ms, NOW + LIMITS.max_future_ms]
        ),
        odd_values,
    ),
    "hr": st.one_of(edges(20, 250), odd_values),
    "hrv": st.one_of(edges(1, 300), odd_values),
    "steps": st.one_of(edges(0, 10_000), odd_values),
    "spo2": st.one_of(edges(50, 100), odd_values),
    "skin_temp": st.one_of(edges(20, 45), odd_values),
    "resp_rate": st.one_of(edges(3, 70), odd_values),
    "device": st.one_of(devices, odd_values),
    "seq": st.one_of(edges(0, 2**31 - 1), odd_values),
    "env": envs,
    "note": st.just("unknown field"),
}
frames = st.fixed_dictionaries({}, optional=values)
plain_frames = st.fixed_dictionaries(
    {"ts": st.integers(NOW - 10_000, NOW)},
    optional={
        "hr": st.one_of(st.integers(20, 250), st.floats(20, 250)),
        "hrv": st.floats(1, 300),
        "steps": st.integers(0, 10_000),
        "skin_temp": st.floats(20, 45),
        "device": st.sampled_from(["w1", "lt7"]),
        "seq": st.integers(0, 2**31 - 1),
    },
).filter(lambda raw: {"hr", "hrv", "steps", "skin_temp"} & raw.keys())


@st.composite
def plain_frames_with_one_field_changed(draw: st.DrawFn) -> dict[str, Any]:
    """A plain valid frame with one field set to an edge or odd value (most often the only
    problem of the frame, so the two paths must agree on that one field)."""
    name = draw(st.sampled_from(sorted(values)))
    return {**draw(plain_frames), name: draw(values[name])}


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.one_of(frames, plain_frames, plain_frames_with_one_field_changed()), max_size=6))
@example([{"ts": NOW, "hr": True}, {"ts": NOW, "steps": 3.0}, {"ts": float(NOW), "hr": 60}])
@example([{"ts": NOW, "device": ["unhashable"], "hr": 60}, {"ts": NOW, "env": {}}])
@example([{"ts": NOW, "hr": 60, "env": {}}, {"ts": NOW, "env": {"temp_c": 20}}])
@example([{"ts": NOW, "hr": 60, "device": "ok\n"}, {"ts": NOW, "hr": float("nan")}])
def test_batches_parse_as_the_general_validator_parses_each_frame(raws: list[Any]) -> None:
    assert_same_as_reference(raws)


@settings(max_examples=200, deadline=None)
@given(st.lists(plain_frames, min_size=1, max_size=6))
def test_batches_decoded_from_json_parse_as_the_general_validator_parses_them(
    raws: list[dict[str, Any]],
) -> None:
    assert_same_as_reference(orjson.loads(orjson.dumps(raws)))


RANGES = {
    "ts": (NOW - LIMITS.max_age_ms, NOW + LIMITS.max_future_ms),
    "hr": (20, 250),
    "hrv": (1, 300),
    "steps": (0, 10_000),
    "spo2": (50, 100),
    "skin_temp": (20, 45),
    "resp_rate": (3, 70),
    "seq": (0, 2**31 - 1),
}


@pytest.mark.parametrize("name", sorted(RANGES))
def test_values_at_and_past_each_bound_parse_as_the_general_validator_parses_them(
    name: str,
) -> None:
    lo, hi = RANGES[name]
    near = [lo, hi, lo - 1, hi + 1, float(lo), float(hi), lo - 0.001, hi + 0.001, lo + 0.5]
    odd = [True, False, float("nan"), float("inf"), "1", None]
    assert_same_as_reference([{"ts": NOW, "hr": 60, name: value} for value in near + odd])
    assert_same_as_reference([{"ts": NOW, "steps": 1, name: value} for value in near + odd])


def test_frames_that_are_not_plain_dicts_still_parse_or_are_rejected_alike() -> None:
    raws: list[Any] = [
        MappingProxyType({"ts": NOW, "hr": 60}),
        [("ts", NOW)],
        "frame",
        None,
        {"ts": NOW, "hr": 60, "env": {"temp_c": 21.5, "weather": "rain"}},
    ]
    assert_same_as_reference(raws)


@given(plain_frames)
def test_plain_frames_take_the_fast_path(raw: dict[str, Any]) -> None:
    oldest, newest = NOW - LIMITS.max_age_ms, NOW + LIMITS.max_future_ms
    fast = frame_wire._plain_frame(raw, oldest, newest, set())
    assert fast is not None
    assert fast == wire.parse_frame(raw, now_ms=NOW, limits=LIMITS)


def test_new_frame_is_the_frame_of_the_same_fields() -> None:
    env = Env(temp_c=20.5, weather="rain")
    built = new_frame(NOW, 61.0, 45.5, 3, 97.0, 33.1, 14.0, "w1", 2, env)
    expected = Frame(NOW, 61.0, 45.5, 3, 97.0, 33.1, 14.0, "w1", 2, env)
    assert type(built) is Frame
    assert built == expected
    assert hash(built) == hash(expected)
    assert repr(built) == repr(expected)
    assert built != new_frame(NOW, 61.0, 45.5, 3, 97.0, 33.1, 14.0, "w1", 3, env)
