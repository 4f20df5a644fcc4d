"""The retry policy: bounded, exponential, full jitter, and instant under test."""

from __future__ import annotations

import pytest

from server.store.retry import RetryPolicy, instant


def test_ceiling_doubles_from_base_delay_up_to_max_delay() -> None:
    policy = RetryPolicy(base_delay=0.1, max_delay=1.0)

    assert [policy.ceiling(n) for n in range(6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert policy.ceiling(10_000) == 1.0  # no overflow for absurd retry numbers


def test_delay_is_the_random_share_of_the_ceiling() -> None:
    draws = iter([0.0, 0.5, 1.0])
    policy = RetryPolicy(base_delay=0.2, max_delay=10.0, random=lambda: next(draws))

    assert [policy.delay(2), policy.delay(2), policy.delay(2)] == pytest.approx([0.0, 0.4, 0.8])


@pytest.mark.parametrize(
    "options",
    [{"attempts": 0}, {"base_delay": -1.0}, {"base_delay": 2.0, "max_delay": 1.0}],
)
def test_nonsensical_bounds_are_refused(options: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**options)  # type: ignore[arg-type]


async def test_instant_policy_records_delays_without_sleeping() -> None:
    delays: list[float] = []
    slow = RetryPolicy(base_delay=60.0, max_delay=600.0, random=lambda: 1.0)
    policy = instant(slow, record=delays)

    await policy.backoff(0)
    await policy.backoff(3)

    assert delays == [60.0, 480.0]  # an hour and more of backoff, taken instantly
    assert (policy.attempts, policy.base_delay) == (8, 60.0)
