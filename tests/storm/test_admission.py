"""Admission control on real sockets: the excess of a reconnect storm is answered 503 with
a Retry-After appointment before the token is looked at, and the clients honour it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from clients.bridge.bridge import Bridge
from clients.bridge.journal import Journal
from clients.connect.access import endpoints
from clients.connect.wsclient import HandshakeFailed, open_ws
from clients.load.devices import Fleet
from clients.load.plan import LoadPlan, Tokens
from server.settings import Settings
from tests.conftest import SECRET, LiveServer, auth, start_server, token


def ignore(*_args: object) -> None:
    return None


async def handshake(live: LiveServer, headers: dict[str, str]) -> HandshakeFailed | None:
    """Open and close one socket; the refusal if the server refused it."""
    try:
        conn = await open_ws(live.ws_url, headers, ignore, ignore, connect_timeout=5)
    except HandshakeFailed as refused:
        return refused
    conn.close()
    async with asyncio.timeout(5):
        await conn.closed
    return None


def _sample(live: LiveServer, reason: str) -> float:
    registry = live.services.metrics.registry
    value = registry.get_sample_value("companion_handshake_rejects_total", {"reason": reason})
    return value or 0.0


async def test_handshakes_beyond_the_burst_get_503_with_retry_after_before_the_token_check(
    settings_with: Callable[..., Settings],
) -> None:
    async with start_server(settings_with(admit_rate=0.5, admit_burst=2)) as live:
        assert await handshake(live, auth("alice", "watch")) is None
        assert await handshake(live, auth("bob", "watch")) is None
        # A bad token: refused by admission (503), not by authentication (401).
        refused = await handshake(live, {"Authorization": "Bearer not-a-token"})
        assert refused is not None and refused.status == 503
        assert refused.retry_after is not None and 1 <= refused.retry_after <= 3
        assert _sample(live, "try later") == 1.0
        assert _sample(live, "TokenInvalid") == 0.0


async def test_successive_refusals_are_given_later_appointments(
    settings_with: Callable[..., Settings],
) -> None:
    async with start_server(settings_with(admit_rate=1.0, admit_burst=1)) as live:
        assert await handshake(live, auth("alice", "watch")) is None
        hints = []
        for user in ("bob", "carol", "dave", "erin"):  # four devices, four appointments
            refused = await handshake(live, auth(user, "watch"))
            assert refused is not None and refused.status == 503
            hints.append(refused.retry_after)
        assert hints == sorted(hints)  # type: ignore[type-var]
        assert hints[-1] is not None and hints[-1] >= 3


async def test_plain_http_is_not_subject_to_websocket_admission(
    settings_with: Callable[..., Settings],
) -> None:
    async with start_server(settings_with(admit_rate=0.5, admit_burst=1)) as live:
        assert await handshake(live, auth("alice", "watch")) is None
        assert (await handshake(live, auth("alice", "watch"))) is not None
        async with httpx.AsyncClient(base_url=live.url) as client:
            assert (await client.get("/healthz")).status_code == 200


async def test_a_fleet_refused_by_admission_comes_back_on_its_appointments(
    settings_with: Callable[..., Settings],
) -> None:
    """Twelve watches at once against a node admitting 4 a second (burst 4): all open,
    about three seconds apart in groups, each refused attempt honoured with jitter."""
    async with start_server(settings_with(admit_rate=4.0, admit_burst=4)) as live:
        plan = LoadPlan(server=live.url, secret=SECRET, watches=12, ramp=1000, prefix="adm-")
        fleet = Fleet(plan, await Tokens(SECRET).all_for(plan), range(12))
        started = time.perf_counter()
        try:
            await fleet.ramp(1000)
            opened = fleet.stats.counters["opened"]
            took = time.perf_counter() - started
        finally:
            await fleet.stop()
        assert opened == 12
        assert _sample(live, "try later") >= 8
        # 8 beyond the burst at 4/s: appointments over 2 s, each + up to 1 s of jitter.
        assert 1.0 <= took <= 6.0
        refused = [e for e in fleet.stats.errors if "503" in e]
        assert refused, fleet.stats.errors


async def test_open_ws_reports_the_retry_after_of_a_refusal(
    settings_with: Callable[..., Settings],
) -> None:
    async with start_server(settings_with(admit_rate=0.5, admit_burst=1)) as live:
        await handshake(live, auth("alice", "watch"))
        with pytest.raises(HandshakeFailed) as caught:
            await open_ws(live.ws_url, auth("alice", "watch"), ignore, ignore)
        assert caught.value.status == 503
        assert caught.value.retry_after is not None


async def test_the_bridge_waits_for_its_appointment_plus_jitter(
    settings_with: Callable[..., Settings], tmp_path: Path
) -> None:
    """The phone bridge, refused by admission, pauses ``Retry-After`` + rand() * 1 s."""
    pauses: list[float] = []
    paused = asyncio.Event()

    async def recording_sleep(seconds: float) -> None:
        pauses.append(seconds)
        paused.set()
        await asyncio.sleep(0)

    async def no_frames(cursor: Any) -> AsyncIterator[tuple[list[dict[str, Any]], Any]]:
        if False:  # an empty source: the bridge only connects
            yield [], cursor

    class Empty:
        chunks = staticmethod(no_frames)

    async with start_server(settings_with(admit_rate=0.5, admit_burst=1)) as live:
        holder = await live.connect("bob", "watch")  # spends the only token
        journal = Journal(tmp_path / "journal")
        journal.open()
        bridge = Bridge(
            endpoints(live.url), token("alice"), Empty(), journal,
            sleep=recording_sleep, rand=lambda: 0.25,
        )  # fmt: skip
        run = asyncio.create_task(bridge.run())
        try:
            async with asyncio.timeout(5):
                await paused.wait()
        finally:
            bridge.stop()
            await asyncio.wait_for(run, 5)
            journal.close()
            await holder.close()
    assert _sample(live, "try later") >= 1
    assert pauses[0] in (1.25, 2.25)  # Retry-After 1 or 2 (the slot 2 s away), + 0.25 s
