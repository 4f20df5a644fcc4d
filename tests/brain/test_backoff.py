"""The one backoff policy: bounded or forever, exponential, full jitter, instant under test."""

from __future__ import annotations

import random

import pytest

from brain.backoff import Backoff, instant


def test_ceiling_doubles_from_base_up_to_cap() -> None:
    policy = Backoff(base=0.1, cap=1.0)

    assert [policy.ceiling(n) for n in range(6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert policy.ceiling(10_000) == 1.0  # no overflow for absurd retry numbers


def test_delay_is_the_random_share_of_the_ceiling() -> None:
    draws = iter([0.0, 0.5, 0.999])
    policy = Backoff(base=0.2, cap=10.0, random=lambda: next(draws))

    assert [policy.delay(2), policy.delay(2), policy.delay(2)] == pytest.approx([0.0, 0.4, 0.7992])


def test_full_jitter_stays_under_the_cap_for_any_draw() -> None:
    rng = random.Random(7)
    policy = Backoff(base=0.5, cap=8.0, random=rng.random)

    assert all(0 <= policy.delay(10) < 8.0 for _ in range(1000))


def test_soon_delay_is_a_jittered_share_of_the_soon_window() -> None:
    policy = Backoff(soon=2.0, random=lambda: 0.25)

    assert policy.soon_delay() == 0.5


def test_attempts_bound_retries_and_none_retries_forever() -> None:
    bounded = Backoff(attempts=3)
    forever = Backoff(attempts=None)

    assert [bounded.may_retry(n) for n in range(4)] == [True, True, False, False]
    assert Backoff(attempts=1).may_retry(0) is False  # one attempt: never a retry
    assert all(forever.may_retry(n) for n in (0, 10, 10_000))


@pytest.mark.parametrize(
    "options",
    [{"attempts": 0}, {"base": -1.0}, {"base": 2.0, "cap": 1.0}, {"soon": -0.1}],
)
def test_nonsensical_bounds_are_refused(options: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**options)  # type: ignore[arg-type]


def test_a_negative_retry_number_is_refused() -> None:
    with pytest.raises(ValueError):
        Backoff().ceiling(-1)


async def test_instant_policy_records_delays_without_sleeping() -> None:
    delays: list[float] = []
    slow = Backoff(base=60.0, cap=600.0, random=lambda: 1.0)
    policy = instant(slow, record=delays)

    await policy.wait(0)
    await policy.wait(3)

    assert delays == [60.0, 480.0]  # an hour and more of backoff, taken instantly
    assert (policy.attempts, policy.base) == (8, 60.0)
