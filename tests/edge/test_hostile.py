"""Hostile clients on real sockets: for each, the close code (or HTTP answer), another
client's ping round trip meanwhile, and a log without tracebacks, ERROR lines or tokens."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.frames import Opcode

from server.push import endpoint
from server.push.endpoint import CLOSE_TIMEOUT_S
from server.settings import Settings
from tests.conftest import LiveServer, start_server, token
from tests.edge.conftest import (
    PROBE_BOUND_S,
    Raw,
    assert_clean_log,
    frame,
    raw_connection,
    round_trip,
    text,
    upgrade_request,
)

HANDSHAKE_TIMEOUT_S = 0.5


@dataclass
class Edge:
    live: LiveServer
    probe: ClientConnection
    token: str
    """The attacker's token (alice, a phone)."""

    @property
    def secrets(self) -> tuple[str, ...]:
        return (self.token, self.live.services.settings.secret)

    async def attacker(self) -> Raw:
        """A raw connection of alice, upgraded (the 101 read)."""
        raw = await Raw.open(self.live)
        assert await raw.upgrade(self.token) == 101
        return raw

    def open_connections(self) -> int:
        return sum(1 for c in self.live.server.server_state.connections)


async def edge_for(settings: Settings) -> AsyncIterator[Edge]:
    async with start_server(settings) as live:
        probe = await live.connect("bob")
        try:
            yield Edge(live, probe, token("alice"))
        finally:
            await probe.close()


@pytest.fixture
async def edge(settings: Settings) -> AsyncIterator[Edge]:
    """A server with quick deadlines, and bob's connection as the latency probe."""
    async for value in edge_for(replace(settings, handshake_timeout_s=HANDSHAKE_TIMEOUT_S)):
        yield value


@pytest.fixture
async def lenient_edge(settings: Settings) -> AsyncIterator[Edge]:
    """As :func:`edge`, with a rate limit high enough that other limits act first."""
    lenient = replace(settings, rate_per_s=1e6, rate_burst=1_000_000)
    async for value in edge_for(lenient):
        yield value


async def probe_is_quick(edge: Edge) -> None:
    rtt = await round_trip(edge.probe)
    assert rtt < PROBE_BOUND_S, f"another client's ping took {rtt * 1000:.0f} ms"


# -- framing -------------------------------------------------------------------------------


async def test_invalid_utf8_closes_1007(edge: Edge, server_log: pytest.LogCaptureFixture) -> None:
    raw = await edge.attacker()
    try:
        await raw.send(frame(Opcode.TEXT, b'{"op":"ping","t":1,"x":"\xff\xfe"}'))
        await probe_is_quick(edge)
        assert await raw.close_code() == 1007
    finally:
        raw.close()
    assert_clean_log(server_log.records, edge.secrets)


async def test_an_unmasked_client_frame_closes_1002(
    edge: Edge, server_log: pytest.LogCaptureFixture
) -> None:
    raw = await edge.attacker()
    try:
        await raw.send(text({"op": "ping", "t": 1})[:0] + frame(Opcode.TEXT, b"{}", mask=False))
        await probe_is_quick(edge)
        assert await raw.close_code() == 1002
    finally:
        raw.close()
    assert_clean_log(server_log.records, edge.secrets)


async def test_a_reserved_opcode_closes_1002(
    edge: Edge, server_log: pytest.LogCaptureFixture
) -> None:
    raw = await edge.attacker()
    try:
        await raw.send(bytes((0x83, 0x80)) + os.urandom(4))  # opcode 3, masked, empty
        await probe_is_quick(edge)
        assert await raw.close_code() == 1002
    finally:
        raw.close()
    assert_clean_log(server_log.records, edge.secrets)


async def test_a_message_over_the_limit_in_fragments_closes_1009(
    lenient_edge: Edge, server_log: pytest.LogCaptureFixture
) -> None:
    edge = lenient_edge
    raw = await edge.attacker()
    try:
        chunk = b"x" * 30_000
        await raw.send(frame(Opcode.TEXT, chunk, fin=False) + frame(Opcode.CONT, chunk, fin=False))
        await raw.send(frame(Opcode.CONT, chunk))
        await probe_is_quick(edge)
        assert await raw.close_code() == 1009
    finally:
        raw.close()
    assert_clean_log(server_log.records, edge.secrets)


async def test_too_many_fragments_close_1008(
    lenient_edge: Edge, server_log: pytest.LogCaptureFixture
) -> None:
    edge = lenient_edge
    raw = await edge.attacker()
    try:
        flood = frame(Opcode.TEXT, b"{", fin=False) + frame(Opcode.CONT, b"", fin=False) * 200
        await raw.send(flood)
        await probe_is_quick(edge)
        assert await raw.close_code() == 1008
    finally:
        raw.close()
    closes = edge.live.services.metrics.registry.get_sample_value(
        "companion_closes_total", {"reason": "too many fragments"}
    )
    assert closes == 1
    assert_clean_log(server_log.records, edge.secrets)


async def test_a_message_whose_fragments_stall_is_closed_1008(
    lenient_edge: Edge, server_log: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    edge = lenient_edge
    monkeypatch.setattr(endpoint, "MAX_MESSAGE_S", 0.3)
    raw = await edge.attacker()
    try:
        await raw.send(frame(Opcode.TEXT, b'{"op":', fin=False))  # and nothing more
        await probe_is_quick(edge)
        assert await raw.close_code(within=5) == 1008
    finally:
        raw.close()
    assert_clean_log(server_log.records, edge.secrets)


async def test_an_empty_continuation_flood_is_rate_limited_1008(
    edge: Edge, server_log: pytest.LogCaptureFixture
) -> None:
    raw = await edge.attacker()
    try:
        start = frame(Opcode.TEXT, b"", fin=False)
        await raw.send(start + frame(Opcode.CONT, b"", fin=False) * 100_000)
        await probe_is_quick(edge)
        assert await raw.close_code() == 1008
        # A closing peer that keeps flooding is dropped, not parsed until the close timeout.
        assert await raw.closed_within(CLOSE_TIMEOUT_S / 2)
    finally:
        raw.close()
    closes = edge.live.services.metrics.registry.get_sample_value(
        "companion_closes_total", {"reason": "rate limit"}
    )
    assert closes == 1
    assert_clean_log(server_log.records, edge.secrets)


async def test_a_closing_peer_is_dropped_after_a_few_frames_not_64_kib_of_them(
    edge: Edge, server_log: pytest.LogCaptureFixture
) -> None:
    raw = await edge.attacker()
    try:
        await raw.send(frame(Opcode.PING, b"p") * 100)  # over the burst: closed 1008
        assert await raw.close_code() == 1008
        # Far under the 64 KiB a closing peer may send, but more frames than it may: each
        # costs a parse, so the socket is dropped now rather than at the close timeout.
        flood = frame(Opcode.PING, b"") * (endpoint.FRAMES_AFTER_CLOSE + 64)
        assert len(flood) < endpoint.READ_AFTER_CLOSE_BYTES // 8
        await raw.send(flood)
        assert await raw.closed_within(CLOSE_TIMEOUT_S / 2)
    finally:
        raw.close()
    assert_clean_log(server_log.records, edge.secrets)


async def test_a_ping_flood_is_rate_limited_1008(
    edge: Edge, server_log: pytest.LogCaptureFixture
) -> None:
    raw = await edge.attacker()
    try:
        await raw.send(frame(Opcode.PING, b"p") * 5_000)
        await probe_is_quick(edge)
        assert await raw.close_code() == 1008
    finally:
        raw.close()
    assert_clean_log(server_log.records, edge.secrets)


async def test_control_frames_between_fragments_are_answered_and_the_message_completes(
    edge: Edge, server_log: pytest.LogCaptureFixture
) -> None:
    raw = await edge.attacker()
    try:
        body = b'{"op":"ping","t":7}'
        await raw.send(
            frame(Opcode.TEXT, body[:5], fin=False)
            + frame(Opcode.PING, b"between")
            + frame(Opcode.CONT, body[5:12], fin=False)
            + frame(Opcode.PONG, b"")
            + frame(Opcode.CONT, body[12:])
        )
        (pong,) = await raw.messages(1)
        assert pong["op"] == "pong" and pong["t"] == 7
        await probe_is_quick(edge)
    finally:
        raw.close()
    assert_clean_log(server_log.records, edge.secrets)


async def test_a_close_in_the_middle_of_a_message_ends_the_connection(
    edge: Edge, server_log: pytest.LogCaptureFixture
) -> None:
    raw = await edge.attacker()
    try:
        close = frame(Opcode.CLOSE, (1000).to_bytes(2, "big"))
        await raw.send(frame(Opcode.TEXT, b'{"op":', fin=False) + close)
        await probe_is_quick(edge)
        # websockets treats a close inside a fragmented message as a protocol error.
        assert await raw.close_code() == 1002
        assert await raw.closed_within(2.0)
    finally:
        raw.close()
    assert_clean_log(server_log.records, edge.secrets)


async def test_a_text_flood_is_rate_limited_1008(
    edge: Edge, server_log: pytest.LogCaptureFixture
) -> None:
    raw = await edge.attacker()
    try:
        await raw.send(text({"op": "ping", "t": 1}) * 2_000)
        await probe_is_quick(edge)
        assert await raw.close_code() == 1008
    finally:
        raw.close()
    assert_clean_log(server_log.records, edge.secrets)


# -- connections that never finish ------------------------------------------------------


async def test_a_half_open_connection_is_dropped_by_the_keepalive(
    settings: Settings, server_log: pytest.LogCaptureFixture
) -> None:
    quick = replace(settings, ping_interval=0.4, ping_timeout=0.3)
    async with start_server(quick) as live:
        raw = await Raw.open(live)
        try:
            assert await raw.upgrade(token("alice")) == 101
            # From here the client neither reads nor answers: the pings go unanswered.
            assert await raw.closed_within(5.0)
        finally:
            raw.close()
        async with asyncio.timeout(5):
            await asyncio.gather(*live.server.server_state.tasks)  # the hub leaves
        assert not live.services.hub.peers("alice")
        assert not live.server.server_state.connections
    assert_clean_log(server_log.records)


@pytest.mark.parametrize(
    "partial",
    [
        b"",
        b"GET /v1/ws HTTP/1.1\r\nHost: x\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: a",
        b"POST /v1/users/alice/frames HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{",
    ],
    ids=["silent", "ws-head", "rest-head", "rest-body"],
)
async def test_slowloris_is_closed_after_the_handshake_timeout(
    edge: Edge, server_log: pytest.LogCaptureFixture, partial: bytes
) -> None:
    async with raw_connection(edge.live) as raw:
        await raw.send(partial)
        await probe_is_quick(edge)
        assert await raw.closed_within(HANDSHAKE_TIMEOUT_S + 3)
    assert_clean_log(server_log.records, edge.secrets)


async def test_a_slow_second_request_on_a_kept_alive_connection_is_closed(
    edge: Edge, server_log: pytest.LogCaptureFixture
) -> None:
    async with raw_connection(edge.live) as raw:
        await raw.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _ = await raw.response_head()
        assert status == 200
        await raw.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the end
        assert await raw.closed_within(HANDSHAKE_TIMEOUT_S + 3)
    assert_clean_log(server_log.records, edge.secrets)


async def test_many_slowloris_connections_leave_others_quick_and_are_all_closed(
    forgiving_edge: Edge, server_log: pytest.LogCaptureFixture
) -> None:
    # Without the penalty box: opening 200 connections can outlast the 0.5 s handshake
    # timeout, and the first ten timeouts would box this address, so the last connections
    # (and the probe) would be refused instead of timed out (the box: test_penalty.py).
    edge = forgiving_edge
    raws = [await Raw.open(edge.live) for _ in range(200)]
    try:
        for raw in raws:
            await raw.send(b"GET /v1/ws HTTP/1.1\r\n")
        await probe_is_quick(edge)
        closed = await asyncio.gather(*(raw.closed_within(HANDSHAKE_TIMEOUT_S + 5) for raw in raws))
        assert all(closed)
    finally:
        for raw in raws:
            raw.close()
    timeouts = edge.live.services.metrics.registry.get_sample_value(
        "companion_handshake_rejects_total", {"reason": "timeout"}
    )
    assert timeouts == 200
    assert_clean_log(server_log.records, edge.secrets)


# -- request heads ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/ws", "/healthz"])
async def test_an_oversized_header_line_is_answered_431_and_closed(
    edge: Edge, server_log: pytest.LogCaptureFixture, path: str
) -> None:
    async with raw_connection(edge.live) as raw:
        request = upgrade_request(edge.token, path=path, headers=[("X-Big", "a" * 20_000)])
        await raw.send(request)
        status, _ = await raw.response_head()
        assert status == 431
        assert await raw.closed_within(2.0)
        await probe_is_quick(edge)
    assert_clean_log(server_log.records, edge.secrets)


async def test_a_huge_head_of_small_headers_is_answered_431_and_closed(
    edge: Edge, server_log: pytest.LogCaptureFixture
) -> None:
    async with raw_connection(edge.live) as raw:
        headers = [(f"X-H{i}", "v" * 50) for i in range(150)]
        await raw.send(upgrade_request(edge.token, headers=headers))
        status, _ = await raw.response_head()
        assert status == 431
        assert await raw.closed_within(2.0)
    assert_clean_log(server_log.records, edge.secrets)


@pytest.mark.parametrize("path", ["/v1/ws", "/healthz"])
async def test_an_oversized_request_target_is_answered_414_and_closed(
    edge: Edge, server_log: pytest.LogCaptureFixture, path: str
) -> None:
    async with raw_connection(edge.live) as raw:
        await raw.send(upgrade_request(edge.token, path=path + "?q=" + "a" * 10_000))
        status, _ = await raw.response_head()
        assert status == 414
        assert await raw.closed_within(2.0)
    assert_clean_log(server_log.records, edge.secrets)


async def test_an_http_1_0_upgrade_is_refused(
    edge: Edge, server_log: pytest.LogCaptureFixture
) -> None:
    async with raw_connection(edge.live) as raw:
        await raw.send(upgrade_request(edge.token, version="1.0"))
        status, _ = await raw.response_head()
        assert status == 400
        assert await raw.closed_within(2.0)
    assert_clean_log(server_log.records, edge.secrets)


async def test_an_upgrade_after_a_first_request_is_refused(
    edge: Edge, server_log: pytest.LogCaptureFixture
) -> None:
    async with raw_connection(edge.live) as raw:
        await raw.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _ = await raw.response_head()
        assert status == 200
        await raw.send(upgrade_request(edge.token))
        assert await raw.closed_within(2.0)
    assert_clean_log(server_log.records, edge.secrets)


async def test_origin_equal_to_a_forged_host_is_refused_403(
    edge: Edge, server_log: pytest.LogCaptureFixture
) -> None:
    async with raw_connection(edge.live) as raw:
        request = upgrade_request(edge.token, headers=[("Origin", "http://evil.example")])
        await raw.send(request.replace(b"Host: 127.0.0.1", b"Host: evil.example"))
        status, _ = await raw.response_head()
        assert status == 403
    assert_clean_log(server_log.records, edge.secrets)


@pytest.mark.parametrize(
    ("credentials", "status"),
    [(None, 401), ("not.a.token", 401), ("", 401)],
    ids=["none", "garbage", "empty"],
)
async def test_refused_handshakes_log_no_error(
    edge: Edge, server_log: pytest.LogCaptureFixture, credentials: str | None, status: int
) -> None:
    async with raw_connection(edge.live) as raw:
        await raw.send(upgrade_request(credentials))
        answer, _ = await raw.response_head()
        assert answer == status
    async with raw_connection(edge.live) as raw:
        await raw.send(upgrade_request(None, path=f"/v1/ws?token={edge.token}&user_id=bob"))
        answer, _ = await raw.response_head()
        assert answer == 403
    async with raw_connection(edge.live) as raw:
        await raw.send(upgrade_request(edge.token, path="/v1/elsewhere"))
        answer, _ = await raw.response_head()
        assert answer == 404
    assert_clean_log(server_log.records, edge.secrets)


async def test_garbage_instead_of_http_is_answered_400(
    edge: Edge, server_log: pytest.LogCaptureFixture
) -> None:
    async with raw_connection(edge.live) as raw:
        await raw.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(64))
        assert await raw.closed_within(3.0)
        await probe_is_quick(edge)
    assert_clean_log(server_log.records, edge.secrets)


async def test_frames_sent_with_the_upgrade_request_are_read(
    edge: Edge, server_log: pytest.LogCaptureFixture
) -> None:
    async with raw_connection(edge.live) as raw:
        await raw.send(upgrade_request(edge.token) + text({"op": "ping", "t": 5}))
        status, _ = await raw.response_head()
        assert status == 101
        (pong,) = await raw.messages(1)
        assert (pong["op"], pong["t"]) == ("pong", 5)
    assert_clean_log(server_log.records, edge.secrets)


@pytest.fixture
async def forgiving_edge(settings: Settings) -> AsyncIterator[Edge]:
    """As :func:`edge`, without the penalty box (which refuses an address after a few abuse
    closes: tests/edge/test_penalty.py), for tests of many abusive connections in a row."""
    forgiving = replace(settings, handshake_timeout_s=HANDSHAKE_TIMEOUT_S, penalty_s=0.0)
    async for value in edge_for(forgiving):
        yield value


async def test_random_bytes_before_and_after_the_upgrade_log_no_error(
    forgiving_edge: Edge, server_log: pytest.LogCaptureFixture
) -> None:
    edge = forgiving_edge
    rng = random.Random(13)
    request = upgrade_request(edge.token)
    for case in range(60):
        async with raw_connection(edge.live) as raw:
            noise = rng.randbytes(rng.randrange(1, 3000))
            if case % 3 == 0:  # garbage instead of a request
                await raw.send(noise)
            elif case % 3 == 1:  # a request cut short, then garbage
                await raw.send(request[: rng.randrange(len(request))] + noise)
            else:  # an upgrade, then garbage as frames (a partial frame may stay open)
                assert await raw.upgrade(edge.token) == 101
                await raw.send(noise)
                continue
            assert await raw.closed_within(HANDSHAKE_TIMEOUT_S + 3)
    await probe_is_quick(edge)
    assert_clean_log(server_log.records, edge.secrets)


async def test_a_socket_ended_without_a_close_frame_is_closed_and_leaves_the_hub(
    edge: Edge, server_log: pytest.LogCaptureFixture
) -> None:
    """A phone that vanishes (a killed app, a dropped network: a FIN and no close frame)
    is closed by the server at once and unsubscribed; nothing is logged above INFO."""
    hub = edge.live.services.hub
    raw = await edge.attacker()
    try:
        await raw.send(text({"op": "hello", "client": "vanishing"}))
        [snapshot] = await raw.messages(1)
        assert snapshot["op"] == "snapshot"
        assert len(hub.peers("alice")) == 1
        raw.writer.write_eof()
        assert await raw.closed_within(5.0)
    finally:
        raw.close()
    async with asyncio.timeout(5.0):
        while hub.peers("alice"):  # noqa: ASYNC110
            await asyncio.sleep(0.01)  # connection_lost runs on the server's next turns
    await probe_is_quick(edge)
    assert_clean_log(server_log.records, edge.secrets)
