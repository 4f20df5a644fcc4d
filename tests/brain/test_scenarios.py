"""The synthetic scenario generator: deterministic, well-formed, and shaped as named."""

from __future__ import annotations

import pytest

from brain.features import compute_features
from brain.scenarios import KINDS, generate, history

T0 = 1_700_006_400_000
MIN = 60_000


@pytest.mark.parametrize("kind", KINDS)
def test_the_same_arguments_give_the_same_frames(kind: str) -> None:
    assert generate(kind, start_ms=T0, minutes=5, seed=4) == generate(
        kind, start_ms=T0, minutes=5, seed=4
    )
    assert generate(kind, start_ms=T0, minutes=5, seed=4) != generate(
        kind, start_ms=T0, minutes=5, seed=5
    )


@pytest.mark.parametrize("kind", KINDS)
def test_frames_are_evenly_spaced_from_start_on_the_given_device(kind: str) -> None:
    frames = generate(kind, start_ms=T0, minutes=10, device="ring", every_s=20)
    assert len(frames) == 30
    assert [f.ts for f in frames] == [T0 + i * 20_000 for i in range(30)]
    assert {f.device for f in frames} == {"ring"}
    assert all(f.hr is not None and 30 < f.hr < 200 for f in frames)


@pytest.mark.parametrize(
    ("kind", "check"),
    [
        ("stress", lambda f: f.hr_slope > 1.5 and f.steps_per_min == 0),
        ("exercise", lambda f: f.steps_per_min > 140 and f.hr_mean > 110),
        ("hike", lambda f: f.altitude_gain_m > 100 and f.speed_mps > 1),
        ("sleep", lambda f: f.hr_mean < 60 and f.steps_per_min == 0),
        ("flight", lambda f: f.spo2 < 95 and f.speed_mps > 100),
        ("heat", lambda f: f.temp_c > 30),
    ],
)
def test_each_kind_has_the_shape_its_name_promises(kind: str, check: object) -> None:
    frames = generate(kind, start_ms=T0, minutes=15)
    features = compute_features(frames, now_ms=T0 + 15 * MIN, baseline=None)
    assert check(features)  # type: ignore[operator]


def test_history_covers_the_days_before_end_every_ten_minutes() -> None:
    frames = history("healthy", days=2, end_ms=T0)
    assert len(frames) == 2 * 24 * 6
    assert frames[-1].ts == T0 - 10 * MIN
    assert frames[0].ts == T0 - 2 * 24 * 60 * MIN


@pytest.mark.parametrize(
    "call",
    [
        lambda: generate("bungee", start_ms=T0, minutes=5),
        lambda: generate("calm", start_ms=T0, minutes=0),
        lambda: history("retired", end_ms=T0),
        lambda: history("healthy", days=0, end_ms=T0),
    ],
)
def test_unknown_kinds_and_empty_spans_are_refused(call: object) -> None:
    with pytest.raises(ValueError):
        call()  # type: ignore[operator]
