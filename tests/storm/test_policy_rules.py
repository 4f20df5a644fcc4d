"""The pure rules of battery-aware delivery and storm control: no loop, no socket."""

from __future__ import annotations

import pytest

from brain.backoff import Backoff
from clients.connect.access import Endpoints
from clients.connect.failover import Failover
from server.auth import DeviceKind, Principal
from server.protocol import (
    DEFAULT_SAVER_INTERVAL_S,
    MAX_RETRY_AFTER_S,
    NORMAL_DELIVERY,
    DeliveryPolicy,
    Delta,
    Hello,
    Power,
    ProtocolError,
    Reconnect,
    SetPolicy,
    parse_client_message,
    retry_after_s,
)
from server.push.admission import Admission, drain_window
from server.push.policy import Pacer, urgent
from server.push.session import Join, Reply, Session, SessionLimits

SAVER_60 = DeliveryPolicy(Power.SAVER, 60.0)


def delta(version: int, **changes: object) -> Delta:
    return Delta("u", version, version - 1, f"h{version}", changes, 0.0)


def parse(text: str) -> object:
    return parse_client_message(text, now_ms=0)


# -- the wire -----------------------------------------------------------------------------


def test_hello_states_a_policy_or_keeps_the_connections() -> None:
    assert parse('{"op":"hello","client":"w"}') == Hello("w", None, None)
    saver = parse('{"op":"hello","client":"w","power":"saver","min_interval_s":60}')
    assert saver == Hello("w", None, SAVER_60)
    normal = parse('{"op":"hello","client":"w","power":"normal"}')
    assert normal == Hello("w", None, NORMAL_DELIVERY)


def test_policy_op_without_interval_takes_the_default_saver_interval() -> None:
    message = parse('{"op":"policy","power":"saver"}')
    assert message == SetPolicy(DeliveryPolicy(Power.SAVER, DEFAULT_SAVER_INTERVAL_S))


@pytest.mark.parametrize(
    "text",
    [
        '{"op":"policy"}',
        '{"op":"policy","power":"turbo"}',
        '{"op":"policy","power":"saver","min_interval_s":0.5}',
        '{"op":"policy","power":"saver","min_interval_s":86400}',
        '{"op":"policy","power":"saver","min_interval_s":"60"}',
        '{"op":"policy","power":"saver","min_interval_s":true}',
        '{"op":"policy","power":"normal","min_interval_s":60}',
        '{"op":"hello","min_interval_s":60}',
    ],
)
def test_a_policy_that_is_not_one_is_a_bad_message(text: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse(text)
    assert caught.value.code == "bad_message"


def test_policy_answer_names_the_policy_in_force() -> None:
    assert SAVER_60.encode() == '{"op":"policy","power":"saver","min_interval_s":60.0}'


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("3", 3),
        (" 0 ", 0),
        ("99999", MAX_RETRY_AFTER_S),
        ("-1", None),
        ("1.5", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", None),
        ("٣", None),  # a digit, but not an ASCII one
        ("9" * 40, None),
    ],
)
def test_retry_after_reads_whole_seconds_and_caps_them(
    header: str | None, seconds: int | None
) -> None:
    assert retry_after_s(header) == seconds


# -- the pacer ----------------------------------------------------------------------------


def test_normal_mode_never_holds() -> None:
    pacer = Pacer()
    pacer.woke(100.0)
    assert pacer.hold_until(delta(2, energy=40), 100.0) is None


def test_saver_holds_what_can_wait_until_the_interval_since_the_last_wake_up() -> None:
    pacer = Pacer(SAVER_60)
    pacer.woke(100.0)
    assert pacer.hold_until(delta(2, energy=40), 130.0) == 160.0
    assert pacer.hold_until(delta(2, image_url="x"), 159.9) == 160.0
    assert pacer.hold_until(delta(2, energy=40), 160.0) is None


def test_saver_sends_a_new_state_mood_or_command_at_once() -> None:
    pacer = Pacer(SAVER_60)
    pacer.woke(100.0)
    for changes in ({"state": "stressed"}, {"mood": "tired", "energy": 3}, {"commands": []}):
        assert urgent(changes)
        assert pacer.hold_until(delta(2, **changes), 101.0) is None
    assert not urgent({"energy": 3, "image_url": "x", "reasoning": "r"})


# -- admission ----------------------------------------------------------------------------


def test_admission_admits_the_burst_then_refuses_with_a_retry_hint() -> None:
    admission = Admission(rate=10.0, burst=3, now=0.0)
    assert [admission.admit(0.0) for _ in range(3)] == [None, None, None]
    assert admission.admit(0.0) == 0  # the first appointment: 0.1 s from now
    assert admission.admit(1.0) is None  # the bucket refilled


def test_refused_handshakes_get_successive_appointments_at_the_admit_rate() -> None:
    admission = Admission(rate=100.0, burst=1, now=0.0)
    assert admission.admit(0.0) is None
    hints = [admission.admit(0.0) for _ in range(1000)]
    assert hints == sorted(hints)
    # 1,000 refusals at 100/s spread over ten seconds: a hundred per whole second (give or
    # take the one the float sums put on either side of a second's edge).
    assert set(hints) <= set(range(11))
    assert all(abs(hints.count(s) - 100) <= 2 for s in range(10))
    assert admission.backlog_s(0.0) == pytest.approx(10.0)
    assert admission.backlog_s(11.0) == 0.0


def test_appointments_never_lie_beyond_the_longest_retry_after() -> None:
    admission = Admission(rate=1.0, burst=1, now=0.0)
    admission.admit(0.0)
    hints = [admission.admit(0.0) for _ in range(500)]
    assert max(h for h in hints if h is not None) == MAX_RETRY_AFTER_S


def test_admission_refuses_a_rate_or_burst_that_is_not_positive() -> None:
    with pytest.raises(ValueError):
        Admission(rate=0.0, burst=1, now=0.0)
    with pytest.raises(ValueError):
        Admission(rate=1.0, burst=0, now=0.0)


def test_drain_window_lets_the_fleet_return_at_the_admit_rate_within_the_cap() -> None:
    assert drain_window(0, 5.0, 1500.0) == 0.0
    assert drain_window(30, 5.0, 1500.0) == pytest.approx(0.02)
    assert drain_window(20_000, 5.0, 1500.0) == 5.0


# -- the clients' rule --------------------------------------------------------------------


def test_a_retry_hint_is_an_appointment_waited_for_with_up_to_one_second_of_jitter() -> None:
    draws = iter([0.0, 0.999, 0.5])
    backoff = Backoff(attempts=None, base=0.5, cap=5.0, soon=1.0, random=lambda: next(draws))
    failover = Failover([Endpoints("http://a", "ws://a/v1/ws")], backoff=backoff)
    pauses = [failover.failed(Reconnect.SOON, 7) for _ in range(3)]
    assert [p.pause for p in pauses if p is not None] == [7.0, 7.999, 7.5]
    # Without a hint, the usual rule: after three failures in a row the backoff has grown.
    assert failover.failures == 3


def test_a_refusal_that_means_stop_is_not_retried_whatever_its_hint() -> None:
    failover = Failover([Endpoints("http://a", "ws://a/v1/ws")])
    assert failover.failed(Reconnect.STOP, 5) is None


# -- the session (no loop) ----------------------------------------------------------------


def session() -> Session:
    principal = Principal("u", DeviceKind.WATCH, token_id="t", expires_at=10**10)
    return Session(principal, SessionLimits(100.0, 100, 10**9), now=0.0)


def test_hello_with_a_policy_sets_it_and_counts_as_a_wake_up() -> None:
    s = session()
    message = b'{"op":"hello","client":"w","power":"saver","min_interval_s":60}'
    assert isinstance(s.on_message(message, text=True, now=100.0), Join)
    assert s.pacer.policy == SAVER_60
    assert s.pacer.next_wake() == 160.0


def test_policy_message_changes_the_policy_and_is_answered_with_it() -> None:
    s = session()
    action = s.on_message(b'{"op":"policy","power":"saver","min_interval_s":60}', text=True, now=0)
    assert action == Reply(SAVER_60.encode())
    assert s.pacer.saver
    s.on_message(b'{"op":"hello","client":"w"}', text=True, now=1.0)
    assert s.pacer.policy == SAVER_60  # a hello without power keeps it
    s.on_message(b'{"op":"policy","power":"normal"}', text=True, now=2.0)
    assert not s.pacer.saver
