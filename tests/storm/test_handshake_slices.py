"""Handshakes worked off a slice at a time (``server.push.admission_queue``): a push to a
connected device is not held behind a storm of queued handshakes, and an upgrade the full
queue cannot take is refused at once with an appointment."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from server.protocol import Delta
from server.push.admission_queue import HANDSHAKES, HandshakeQueue, handshake_queue
from server.settings import Settings
from tests.conftest import LiveServer, recv_op, start_server, token

STORM = 300
"""Pieces of handshake work queued at once (~1 ms each)."""


def _spin(seconds: float) -> None:
    """Work (CPU, not a wait) for ``seconds``: a handshake's cost."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def _until(condition: Callable[[], bool], within: float = 10.0) -> None:
    """Yield turns of the loop until ``condition`` holds; fail after ``within`` seconds."""
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110  # the condition is a count, not an event
            await asyncio.sleep(0)


async def test_a_ready_callback_waits_at_most_one_slice_of_queued_work() -> None:
    queue = HandshakeQueue(slice_s=0.002, per_slice=1_000)
    ran: list[int] = []
    for i in range(200):  # 200 pieces of 1 ms: 0.2 s of work
        queue.offer(lambda i=i: (_spin(0.001), ran.append(i)))
    pushed = asyncio.Event()
    ran_before_push: list[int] = []

    def push() -> None:
        ran_before_push.append(len(ran))
        pushed.set()

    asyncio.get_running_loop().call_soon(push)
    async with asyncio.timeout(5):
        await pushed.wait()
    # The first slice (2 ms: two or three pieces) ran, then the push, not the 200.
    assert ran_before_push[0] <= 3
    await _until(lambda: len(ran) == 200)
    assert ran == list(range(200))  # in order


async def test_quick_work_is_also_cut_into_slices_of_a_bounded_count() -> None:
    queue = HandshakeQueue(slice_s=1.0, per_slice=64)
    ran: list[int] = []
    for i in range(1_000):
        queue.offer(lambda i=i: ran.append(i))
    seen = asyncio.Event()
    counts: list[int] = []
    asyncio.get_running_loop().call_soon(lambda: (counts.append(len(ran)), seen.set()))
    async with asyncio.timeout(5):
        await seen.wait()
    assert counts == [64]
    await _until(lambda: len(ran) == 1_000)


async def test_a_full_queue_takes_no_more_new_connections_but_every_close() -> None:
    queue = HandshakeQueue(limit=2)
    done: list[str] = []
    assert queue.offer(lambda: done.append("a"))
    assert queue.offer(lambda: done.append("b"))
    assert not queue.offer(lambda: done.append("c"))
    assert queue.offer(lambda: done.append("eof"), bounded=False)
    assert len(queue) == 3
    await _until(lambda: len(queue) == 0)
    assert done == ["a", "b", "eof"]


async def test_work_that_fails_does_not_stop_the_rest() -> None:
    queue = HandshakeQueue()
    done: list[int] = []
    errors: list[object] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: errors.append(context.get("exception")))
    try:

        def fail() -> None:
            raise RuntimeError("a bug in one handshake")

        queue.offer(fail)
        queue.offer(lambda: done.append(1))
        await _until(lambda: done == [1])
    finally:
        loop.set_exception_handler(None)
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)


def _upgrade(live: LiveServer, user: str) -> bytes:
    host = live.url.removeprefix("http://")
    return (
        f"GET /v1/ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token(user, 'watch')}\r\n\r\n"
    ).encode()


async def test_a_push_is_delivered_while_a_storm_of_handshakes_waits(
    settings_with: Callable[..., Settings],
) -> None:
    settings = settings_with(admit_rate=100_000.0, admit_burst=100_000)
    async with start_server(settings) as live:
        watch = await live.connect("alice", "watch")
        queue = handshake_queue(live.services)
        # A storm's worth of work queued at once: 300 pieces of ~1 ms (a handshake is
        # ~0.3 ms on a quiet machine), then real upgrades behind them.
        for _ in range(STORM):
            queue.offer(lambda: _spin(0.001))
        host, port = live.url.removeprefix("http://").rsplit(":", 1)
        opened = [await asyncio.open_connection(host, int(port)) for _ in range(20)]
        try:
            for i, (_, writer) in enumerate(opened):
                writer.write(_upgrade(live, f"storm-{i}"))
            started = time.perf_counter()
            await live.services.hub.publish_delta(
                Delta("alice", 1, 0, "h1", {"mood": "calm"}, time.time() * 1000)
            )
            delta = await recv_op(watch, "delta", within=5)
            took = time.perf_counter() - started
            waiting = len(queue)
            assert delta["version"] == 1
            # Delivered between slices, not after the queue: most of the storm still waits.
            assert waiting > STORM // 2, f"the push waited for {STORM - waiting} pieces"
            assert took < 0.15
            # And the queued upgrades are answered in their turn: 101 on each socket.
            for reader, _ in opened:
                async with asyncio.timeout(10):
                    status = await reader.readline()
                assert status.startswith(b"HTTP/1.1 101"), status
        finally:
            for _, writer in opened:
                writer.close()
            await watch.close()


async def test_an_upgrade_the_full_queue_cannot_take_is_refused_at_once_with_an_appointment(
    settings_with: Callable[..., Settings],
) -> None:
    async with start_server(settings_with(admit_rate=100.0, admit_burst=100)) as live:
        live.services.parts.add(HANDSHAKES, HandshakeQueue(limit=0))  # always full
        host, port = live.url.removeprefix("http://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(_upgrade(live, "bob"))
            async with asyncio.timeout(5):
                answer = await reader.read()  # the server closes after its answer
        finally:
            writer.close()
        head = answer.split(b"\r\n\r\n", 1)[0].decode()
        assert head.startswith("HTTP/1.1 503")
        assert "Retry-After: " in head
        registry = live.services.metrics.registry
        refused = registry.get_sample_value(
            "companion_handshake_rejects_total", {"reason": "try later"}
        )
        assert refused == 1.0


async def test_a_queued_upgrade_keeps_its_handshake_deadline(
    settings_with: Callable[..., Settings],
) -> None:
    async with start_server(settings_with(handshake_timeout_s=0.2)) as live:
        queue = handshake_queue(live.services)
        # 0.6 s of other handshakes' work ahead of it: its turn comes after its deadline.
        for _ in range(600):
            queue.offer(lambda: _spin(0.001))
        host, port = live.url.removeprefix("http://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(_upgrade(live, "carol"))
            async with asyncio.timeout(5):
                answer = await reader.read()  # answered, then closed
            assert len(queue) > 0  # answered by its deadline, not by its turn
        finally:
            writer.close()
        assert answer.startswith(b"HTTP/1.1 408"), answer[:40]
        await _until(lambda: len(queue) == 0)  # its turn came: skipped, nothing written
