"""Battery-aware delivery on real sockets: a saver device is woken at most once per
interval, except for what matters; the policy is per device, not per user."""

from __future__ import annotations

import time
from typing import Any

from websockets.asyncio.client import ClientConnection

from server.settings import Settings
from tests.conftest import LiveServer, recv, send, start_server
from tests.hops.conftest import Clock
from tests.server.conftest import commit

USER = "alice"
TIMER_SLACK_S = 0.01
"""The event loop's timers have millisecond resolution and may fire that much early."""


async def hello(ws: ClientConnection, **policy: Any) -> float:
    """Say hello with ``policy``; read the snapshot; the time the hello was sent."""
    sent = time.time()
    await send(ws, {"op": "hello", "client": "test", **policy})
    assert (await recv(ws))["op"] == "snapshot"
    return sent


async def test_saver_device_gets_changes_that_can_wait_merged_once_the_interval_passed(
    live_server: LiveServer,
) -> None:
    phone = await live_server.connect(USER, "phone")
    watch = await live_server.connect(USER, "watch", hello=False)
    async with phone, watch:
        woke = await hello(watch, power="saver", min_interval_s=1.5)
        async with live_server.http() as client:
            first = await commit(client, USER, energy=41)
            second = await commit(client, USER, energy=42, reasoning="steady")
        # The phone (normal mode) gets each change at once.
        assert (await recv(phone))["version"] == first["version"]
        assert (await recv(phone))["version"] == second["version"]
        # The watch gets one delta spanning both, not before the interval.
        merged = await recv(watch, within=5)
        arrived = time.time()
        assert merged["op"] == "delta"
        assert merged["version"] == second["version"]
        assert merged["base"] == first["version"] - 1
        assert merged["changes"]["energy"] == 42
        assert merged["changes"]["reasoning"] == "steady"
        assert arrived - woke >= 1.5 - TIMER_SLACK_S


async def test_saver_device_gets_a_new_mood_at_once_with_what_was_held(
    live_server: LiveServer,
) -> None:
    watch = await live_server.connect(USER, "watch", hello=False)
    async with watch:
        await hello(watch, power="saver", min_interval_s=600)
        async with live_server.http() as client:
            await commit(client, USER, energy=33)
            started = time.time()
            urgent = await commit(client, USER, mood="tired")
        message = await recv(watch, within=2)  # far sooner than the 600 s interval
        assert time.time() - started < 2
        assert message["version"] == urgent["version"]
        assert message["changes"]["mood"] == "tired"
        assert message["changes"]["energy"] == 33  # the held change came along


async def test_policy_op_back_to_normal_releases_held_changes_and_is_confirmed(
    live_server: LiveServer,
) -> None:
    watch = await live_server.connect(USER, "watch", hello=False)
    async with watch:
        await hello(watch, power="saver", min_interval_s=600)
        async with live_server.http() as client:
            held = await commit(client, USER, energy=12)
        await send(watch, {"op": "policy", "power": "normal"})
        answers = [await recv(watch), await recv(watch)]
        ops = sorted(a["op"] for a in answers)
        assert ops == ["delta", "policy"]
        delta = next(a for a in answers if a["op"] == "delta")
        assert delta["version"] == held["version"]
        policy = next(a for a in answers if a["op"] == "policy")
        assert policy == {"op": "policy", "power": "normal", "min_interval_s": 0.0}


async def test_policy_op_to_saver_holds_later_changes(live_server: LiveServer) -> None:
    watch = await live_server.connect(USER, "watch")
    async with watch:
        await send(watch, {"op": "policy", "power": "saver", "min_interval_s": 600})
        assert (await recv(watch))["op"] == "policy"
        async with live_server.http() as client:
            await commit(client, USER, energy=71)  # held: the policy answer woke the watch
            urgent = await commit(client, USER, state="stressed")
        message = await recv(watch)
        assert message["version"] == urgent["version"]
        assert message["changes"]["energy"] == 71


async def test_a_bad_policy_is_answered_with_an_error_and_the_socket_stays(
    live_server: LiveServer,
) -> None:
    watch = await live_server.connect(USER, "watch")
    async with watch:
        await send(watch, {"op": "policy", "power": "turbo"})
        error = await recv(watch)
        assert (error["op"], error["code"]) == ("error", "bad_message")
        await send(watch, {"op": "ping", "t": 1})
        assert (await recv(watch))["op"] == "pong"


async def test_a_new_hello_while_changes_are_held_gets_a_snapshot_and_no_stale_delta(
    live_server: LiveServer,
) -> None:
    watch = await live_server.connect(USER, "watch", hello=False)
    async with watch:
        await hello(watch, power="saver", min_interval_s=600)
        async with live_server.http() as client:
            held = await commit(client, USER, energy=55)
        await send(watch, {"op": "hello", "client": "test"})
        snapshot = await recv(watch)
        assert snapshot["op"] == "snapshot"
        assert snapshot["version"] == held["version"]
        assert snapshot["energy"] == 55
        # Nothing older follows: the next message is the answer to this ping.
        await send(watch, {"op": "ping", "t": 2})
        assert (await recv(watch))["op"] == "pong"


async def test_a_push_counts_as_a_wake_up_for_a_policy_set_after_it(settings: Settings) -> None:
    """A device is woken by a push in normal mode, then asks for saver mode: the interval
    runs from that push, not from its hello (the push went by the direct write path, which
    keeps the wake-up on the connection)."""
    clock = Clock()
    async with start_server(settings, clock=clock) as live:
        watch = await live.connect(USER, "watch")  # hello: woken at the clock's start
        async with watch, live.http() as client:
            clock.offset = 700.0  # past the hello's interval of 600 s, not the push's
            pushed = await commit(client, USER, energy=20)
            assert (await recv(watch))["version"] == pushed["version"]
            await send(watch, {"op": "policy", "power": "saver", "min_interval_s": 600})
            assert (await recv(watch))["op"] == "policy"
            await commit(client, USER, energy=21)  # can wait: 600 s from the push
            urgent = await commit(client, USER, mood="tired")
            message = await recv(watch)
    assert message["version"] == urgent["version"]
    assert message["base"] == pushed["version"]
    assert message["changes"]["energy"] == 21  # held, then carried by the mood
