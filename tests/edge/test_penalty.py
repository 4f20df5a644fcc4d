"""The penalty box on real sockets: an address closed for abuse again and again is refused
(held a second, then 503 with Retry-After) until its penalty ends; other addresses, and
connections already open, are not touched.

Each attacker connects from a loopback address of its own (Linux routes all of 127.0.0.0/8
to the loopback interface), the well-behaved clients from others. The server's clock is a
:class:`Clock` the tests move forward, so a penalty ends without a test waiting for it.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from websockets.frames import Opcode

from server.protocol import retry_after_s
from server.push.penalty import REFUSAL_HOLD_S
from server.settings import Settings
from tests.conftest import LiveServer, recv_op, send, start_server, token
from tests.edge.conftest import Raw, assert_clean_log, frame, round_trip, upgrade_request

STRIKES = 3
FIRST_S = 3.0
FLOODER = "127.0.0.2"
NEIGHBOUR = "127.0.0.3"
SLOWLORIS = "127.0.0.4"


class Clock:
    """Wall time plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def live(settings: Settings, clock: Clock) -> AsyncIterator[LiveServer]:
    boxed = replace(
        settings,
        penalty_s=FIRST_S,
        penalty_max_s=8.0,
        penalty_strikes=STRIKES,
        penalty_window_s=60.0,
        handshake_timeout_s=0.3,
    )
    async with start_server(boxed, clock=clock) as server:
        yield server


def fragment_flood() -> bytes:
    """A text message split into more fragments than a message may have (the connection's
    rate limit, 60 frames at once, acts first: either way a 1008 for abuse)."""
    return frame(Opcode.TEXT, b"", fin=False) + frame(Opcode.CONT, b"", fin=False) * 100


async def flood_once(live: LiveServer, source: str = FLOODER) -> int:
    """One flooder connection from ``source``: the HTTP status of its upgrade, and if it
    was 101, the flood until the server closes it (1008, too many fragments)."""
    raw = await Raw.open(live, source)
    try:
        status = await raw.upgrade(token("mallory"))
        if status == 101:
            await raw.send(fragment_flood())
            assert await raw.close_code() == 1008
        return status
    finally:
        raw.close()


def told(period_s: float) -> int:
    """The Retry-After of a refusal in the first moments of a penalty of ``period_s``: the
    seconds left once the refusal was held (at least 1)."""
    return max(1, math.ceil(period_s - REFUSAL_HOLD_S))


async def refused_for(live: LiveServer, source: str) -> int | None:
    """The Retry-After of the server's answer to an upgrade from ``source`` if it refuses
    it with 503 (after holding it for :data:`REFUSAL_HOLD_S`), else ``None`` (the upgrade
    was taken)."""
    raw = await Raw.open(live, source)
    try:
        started = time.monotonic()
        await raw.send(upgrade_request(token("mallory")))
        status, head = await raw.response_head()
        if status != 503:
            assert status == 101
            return None
        assert time.monotonic() - started >= REFUSAL_HOLD_S * 0.9  # held, not answered at once
        assert await raw.closed_within(2.0)
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "retry-after":
                return retry_after_s(value)
        raise AssertionError("503 without Retry-After")
    finally:
        raw.close()


def sample(live: LiveServer, name: str, **labels: str) -> float:
    value = live.services.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else float(value)


def penalties(live: LiveServer) -> dict[str, float]:
    """``companion_penalties_total`` by reason."""
    return {
        s.labels["reason"]: s.value
        for metric in live.services.metrics.registry.collect()
        if metric.name == "companion_penalties"
        for s in metric.samples
        if s.name == "companion_penalties_total"
    }


async def test_a_flooder_is_refused_during_its_penalty_and_admitted_after(
    live: LiveServer, clock: Clock, server_log: pytest.LogCaptureFixture
) -> None:
    for _ in range(STRIKES):
        assert await flood_once(live) == 101
    assert await refused_for(live, FLOODER) == told(FIRST_S)
    assert penalties(live) == {"rate limit": 1}
    assert sample(live, "companion_handshake_rejects_total", reason="penalty") == 1
    assert sample(live, "companion_penalty_box_addresses") == 1
    clock.advance(FIRST_S)
    assert await flood_once(live) == 101  # served again once the penalty is over
    assert sample(live, "companion_penalty_box_addresses") == 0
    # No address, no client string in the log: only the summary, at most once a minute.
    assert all(FLOODER not in r.getMessage() for r in server_log.records)
    assert_clean_log(server_log.records)


async def test_a_repeat_offender_is_refused_twice_as_long(live: LiveServer, clock: Clock) -> None:
    for round_ in range(2):
        for _ in range(STRIKES):
            assert await flood_once(live) == 101
        assert await refused_for(live, FLOODER) == told(FIRST_S * 2**round_)
        clock.advance(FIRST_S * 2**round_)


async def test_a_well_behaved_client_from_another_address_is_served(live: LiveServer) -> None:
    for _ in range(STRIKES):
        await flood_once(live)
    assert await refused_for(live, FLOODER) is not None
    neighbour = await live.connect("bob", local_addr=(NEIGHBOUR, 0))
    try:
        assert await round_trip(neighbour) < 0.25
    finally:
        await neighbour.close()


async def test_a_connection_open_before_its_address_was_boxed_keeps_its_pushes(
    live: LiveServer,
) -> None:
    """The shared-address case: a phone behind the flooder's address (carrier NAT) that was
    connected already is not closed and still gets its deltas."""
    phone = await live.connect("carol", local_addr=(FLOODER, 0))
    try:
        for _ in range(STRIKES):
            await flood_once(live)
        assert await refused_for(live, FLOODER) is not None
        async with live.http() as http:
            response = await http.post(
                "/v1/demo/users/carol/state",
                json={"state": "stressed", "force": True},
                headers={"Authorization": f"Bearer {token('ops', 'service')}"},
            )
            response.raise_for_status()
        delta = await recv_op(phone, "delta")
        assert delta["user_id"] == "carol"
        await send(phone, {"op": "ping", "t": 1})
        assert (await recv_op(phone, "pong"))["t"] == 1
    finally:
        await phone.close()


async def test_slowloris_handshake_timeouts_box_the_address(live: LiveServer) -> None:
    for _ in range(STRIKES):
        raw = await Raw.open(live, SLOWLORIS)
        try:
            await raw.send(b"GET /v1/ws HTTP/1.1\r\nHost: x\r\n")  # and never the rest
            status, _ = await raw.response_head(within=5.0)
            assert status == 408
        finally:
            raw.close()
    assert await refused_for(live, SLOWLORIS) == told(FIRST_S)
    assert penalties(live) == {"timeout": 1}


async def test_bad_framing_counts_as_abuse(live: LiveServer) -> None:
    for _ in range(STRIKES):
        raw = await Raw.open(live, FLOODER)
        try:
            assert await raw.upgrade(token("mallory")) == 101
            await raw.send(frame(Opcode.TEXT, b"{}", mask=False))  # clients must mask
            assert await raw.close_code() == 1002
        finally:
            raw.close()
    assert await refused_for(live, FLOODER) == told(FIRST_S)
    assert penalties(live) == {"protocol error": 1}


async def test_fewer_abuse_closes_than_the_strikes_box_nobody(live: LiveServer) -> None:
    for _ in range(STRIKES - 1):
        await flood_once(live)
    assert await refused_for(live, FLOODER) is None
    assert penalties(live) == {}


async def test_with_the_penalty_off_a_flooder_is_never_refused(
    settings: Settings, clock: Clock
) -> None:
    off = replace(settings, penalty_s=0.0, penalty_strikes=1)
    async with start_server(off, clock=clock) as live:
        for _ in range(STRIKES + 2):
            assert await flood_once(live) == 101
        assert sample(live, "companion_handshake_rejects_total", reason="penalty") == 0
