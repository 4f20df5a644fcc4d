"""The penalty box's policy without a loop or a socket: strikes, periods, decay, memory."""

from __future__ import annotations

from server.metrics import Metrics
from server.protocol import Disconnects
from server.push.penalty import (
    ABUSE_REASONS,
    MAX_ADDRESSES,
    SUMMARY_S,
    PenaltyBox,
    PenaltyPolicy,
    address_key,
    peer_key,
    retry_after,
)

POLICY = PenaltyPolicy(first_s=1.0, max_s=8.0, strikes=3, window_s=10.0)


def box_after(strikes: int, key: str = "198.51.100.7", now: float = 0.0) -> PenaltyBox:
    box = PenaltyBox(POLICY, now)
    for _ in range(strikes):
        box.strike(key, now)
    return box


def offend(box: PenaltyBox, key: str, now: float) -> bool:
    """Strike ``key`` as often as it takes to box it; whether the last strike did."""
    return [box.strike(key, now) for _ in range(POLICY.strikes)][-1]


def test_the_strike_that_reaches_the_threshold_boxes_the_address() -> None:
    box = PenaltyBox(POLICY, 0.0)
    assert [box.strike("a", 0.0) for _ in range(3)] == [False, False, True]
    assert box.refusal("a", 0.0) == 1.0
    assert box.refusal("a", 0.5) == 0.5


def test_fewer_strikes_than_the_threshold_refuse_nothing() -> None:
    assert box_after(2).refusal("198.51.100.7", 0.0) is None


def test_a_boxed_address_is_admitted_when_its_penalty_ends() -> None:
    box = box_after(3)
    assert box.refusal("198.51.100.7", 0.999) is not None
    assert box.refusal("198.51.100.7", 1.0) is None


def test_other_addresses_are_never_refused() -> None:
    assert box_after(3).refusal("198.51.100.8", 0.0) is None


def test_strikes_older_than_the_window_do_not_add_up() -> None:
    box = PenaltyBox(POLICY, 0.0)
    box.strike("a", 0.0)
    box.strike("a", 1.0)
    assert not box.strike("a", 10.0)  # a new window: one strike in it
    assert box.refusal("a", 10.0) is None
    box.strike("a", 11.0)
    assert box.strike("a", 12.0)


def test_each_repeat_doubles_the_period_up_to_the_cap() -> None:
    box = PenaltyBox(POLICY, 0.0)
    now, periods = 0.0, []
    for _ in range(6):
        assert offend(box, "a", now)
        remaining = box.refusal("a", now)
        assert remaining is not None
        periods.append(remaining)
        now += remaining
    assert periods == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_strikes_while_boxed_do_not_lengthen_the_penalty() -> None:
    box = box_after(3)
    for _ in range(10):
        assert not box.strike("198.51.100.7", 0.5)
    assert box.refusal("198.51.100.7", 0.5) == 0.5


def test_a_level_is_forgiven_per_max_s_of_good_behaviour() -> None:
    box = PenaltyBox(POLICY, 0.0)
    now = 0.0
    for _ in range(3):  # periods 1, 2, 4: level 3
        offend(box, "a", now)
        now += box.refusal("a", now) or 0.0
    # One cap (8 s) of good behaviour: level 2, so the next penalty is the third (4 s).
    now += 8.0
    offend(box, "a", now)
    assert box.refusal("a", now) == 4.0
    # Long good behaviour forgets the address: the next penalty is a first one again.
    now += 4.0 + 10 * 8.0
    offend(box, "a", now)
    assert box.refusal("a", now) == 1.0


def test_an_address_with_nothing_left_is_forgotten() -> None:
    box = box_after(3, key="a")
    box.strike("b", 0.0)
    assert len(box) == 2
    later = 1.0 + POLICY.max_s + POLICY.window_s
    box.strike("c", later)  # strikes prune the oldest entries as they go
    assert len(box) == 1


def test_memory_stays_bounded_under_many_addresses() -> None:
    box = PenaltyBox(POLICY, 0.0)
    for n in range(MAX_ADDRESSES):  # a full box: every address boxed
        offend(box, f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}", 0.0)
    for n in range(3 * MAX_ADDRESSES):  # then an attacker with many addresses
        box.strike(f"172.{n >> 16}.{(n >> 8) & 255}.{n & 255}", 0.5)
    assert len(box) <= 2 * MAX_ADDRESSES
    # The suspects made room for each other, not by flushing the boxed addresses.
    assert box.refusal("10.0.0.0", 0.5) is not None
    assert box.boxed(0.5) == MAX_ADDRESSES


def test_a_box_beyond_its_capacity_drops_the_least_recently_boxed() -> None:
    box = PenaltyBox(POLICY, 0.0, capacity=2)
    for key in ("a", "b", "c"):
        offend(box, key, 0.0)
    assert box.refusal("a", 0.0) is None
    assert box.refusal("b", 0.0) is not None
    assert box.refusal("c", 0.0) is not None


def test_an_off_policy_boxes_nobody() -> None:
    box = PenaltyBox(PenaltyPolicy(first_s=0.0, max_s=8.0, strikes=1, window_s=10.0), 0.0)
    assert not box.strike("a", 0.0)
    assert box.refusal("a", 0.0) is None
    assert len(box) == 0


def test_the_summary_comes_at_most_once_per_period_and_only_after_activity() -> None:
    box = box_after(3, key="a")
    box.refusal("a", 0.1)
    assert box.summary(1.0) is None  # too soon
    summary = box.summary(SUMMARY_S)
    assert summary is not None
    assert (summary.refused, summary.boxed) == (1, 1)
    assert box.summary(2 * SUMMARY_S) is None  # nothing happened since


def test_ipv6_peers_are_keyed_by_their_64_prefix() -> None:
    assert address_key("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") == "2001:db8:1:3::/64"
    assert address_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert address_key("192.0.2.1") == "192.0.2.1"


def test_a_peer_that_is_not_an_internet_address_has_no_key() -> None:
    assert peer_key(("192.0.2.1", 5000)) == "192.0.2.1"
    assert peer_key(("fe80::1%eth0", 5000, 0, 2)) == "fe80::/64"
    assert peer_key("/run/companion.sock") is None
    assert peer_key(None) is None


def test_retry_after_is_whole_seconds_from_one_to_the_client_cap() -> None:
    assert retry_after(0.01) == 1
    assert retry_after(2.2) == 3
    assert retry_after(1e9) == 120


def test_abuse_is_what_a_working_client_never_causes() -> None:
    for innocent in (
        Disconnects.NORMAL,
        Disconnects.SLOW_CONSUMER,
        Disconnects.INTERNAL,
        Disconnects.RESTART,
        Disconnects.TRY_LATER,
        Disconnects.TOKEN_EXPIRED,
        Disconnects.FORBIDDEN,
    ):
        assert innocent.reason not in ABUSE_REASONS
    for refusal in ("TokenExpired", "TokenMissing", "try later", "not found", "penalty"):
        assert refusal not in ABUSE_REASONS
    assert Disconnects.FRAGMENTED.reason in ABUSE_REASONS
    assert "timeout" in ABUSE_REASONS


def test_every_abuse_reason_is_a_label_of_the_penalties_metric() -> None:
    metrics = Metrics()
    for reason in ABUSE_REASONS:
        metrics.penalties.labels(reason).inc()
    labels = {
        s.labels["reason"]
        for m in metrics.registry.collect()
        if m.name == "companion_penalties"
        for s in m.samples
        if s.name == "companion_penalties_total"
    }
    assert labels == ABUSE_REASONS
