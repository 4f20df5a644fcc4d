"""Appointments kept for the device they were given to (:class:`Admission` with device
keys): pure, no loop, no socket."""

from __future__ import annotations

import random

from server.push.admission import EARLY_S, LATE_S, Admission, device_key

HEAD = (
    b"GET /v1/ws HTTP/1.1\r\nHost: node\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: {key}\r\nAuthorization: Bearer tok-{who}\r\n\r\n"
)


def head(who: str, ws_key: str = "abc") -> bytes:
    return HEAD.replace(b"{key}", ws_key.encode()).replace(b"{who}", who.encode())


def test_the_device_key_is_its_credentials_not_its_handshake_nonce() -> None:
    assert device_key(head("alice", "k1")) == device_key(head("alice", "k2"))
    assert device_key(head("alice")) != device_key(head("bob"))
    lower = head("alice").replace(b"Authorization", b"authorization")
    assert device_key(lower) == device_key(head("alice"))


def test_the_device_key_of_a_browser_is_its_token_parameter() -> None:
    browser = b"GET /v1/ws?token=abc&x=1 HTTP/1.1\r\nHost: node\r\n\r\n"
    other = b"GET /v1/ws?token=abd HTTP/1.1\r\nHost: node\r\n\r\n"
    assert device_key(browser) is not None
    assert device_key(browser) != device_key(other)
    # A "token=" in a header, not the request line, is no credential.
    assert device_key(b"GET /v1/ws HTTP/1.1\r\nX-Note: ?token=abc\r\n\r\n") is None


def test_a_device_that_comes_back_on_time_is_admitted_though_the_bucket_is_empty() -> None:
    admission = Admission(rate=10.0, burst=1, now=0.0)
    assert admission.admit(0.0, 1) is None  # spends the burst
    hints = {d: admission.admit(0.0, d) for d in range(2, 52)}  # 50 devices: 5 s of slots
    assert all(h is not None for h in hints.values())
    # The bucket stays empty (another device takes each token as it comes) ...
    assert admission.admit(4.0, 999) is None
    assert admission.admit(4.0, 1000) is not None
    # ... yet device 40 (slot 3.9 s) is let in on time, and so are all the others.
    assert admission.admit(4.0, 40) is None
    assert admission.reserved == 50  # 51 given (1000's too), 40's used


def test_a_device_that_comes_back_early_keeps_its_appointment() -> None:
    admission = Admission(rate=1.0, burst=1, now=0.0)
    admission.admit(0.0, 1)
    hints = [admission.admit(0.0, d) for d in range(2, 10)]  # slots 1 s … 8 s
    assert hints == list(range(1, 9))
    assert admission.admit(0.5, 9) == 7  # back far too early, the bucket empty: same slot
    assert admission.backlog_s(0.0) == 8.0  # not a ninth slot at the end of the queue
    assert admission.admit(8.0 - EARLY_S, 9) is None  # in the window before its slot


def test_an_appointment_nobody_came_for_is_forgotten() -> None:
    admission = Admission(rate=10.0, burst=1, now=0.0)
    admission.admit(0.0, 1)
    admission.admit(0.0, 2)  # slot 0.1
    assert admission.reserved == 1
    admission.admit(0.1 + LATE_S + 1.0, 3)  # spends the refilled bucket: no appointment
    admission.admit(0.1 + LATE_S + 1.0, 4)  # refused: its appointment clears out device 2's
    assert admission.reserved == 1


def test_a_storm_with_jitter_is_back_in_n_over_rate_with_one_refusal_each() -> None:
    """2,000 devices at once against 100/s and a burst of 5; each refused device comes back
    its hint plus up to one second of jitter, as the clients do. Every one is let in on its
    first return, and the last within N / rate + 1 s."""
    rng = random.Random(7)
    admission = Admission(rate=100.0, burst=5, now=0.0)
    returns: list[tuple[float, int]] = []
    refusals = 0
    herd = sorted(rng.uniform(0.0, 0.5) for _ in range(2000))  # the first half second
    for device, now in enumerate(herd):
        hint = admission.admit(now, device)
        if hint is not None:
            refusals += 1
            returns.append((now + hint + rng.random(), device))
    returns.sort()
    again = [admission.admit(when, device) for when, device in returns]
    assert again.count(None) == len(again)  # nobody refused twice
    assert refusals >= 1900
    assert max(when for when, _ in returns) <= 2000 / 100.0 + 0.5 + 1.0 + EARLY_S
