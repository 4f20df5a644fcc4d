"""``companion loadtest`` against a live server on 127.0.0.1: small, bounded runs.

The server runs in the test's event loop (``live_server``); the command line runs as a
subprocess (it owns its own uvloop loop), the library entry point :func:`run_plan` in the
test's loop. Every wait is bounded by a timeout; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from clients.load.driver import MAX_POOL, MIN_POOL, pool_size
from clients.load.loadtest import run_plan
from clients.load.plan import LoadPlan, PlanError, Tokens, check_loopback, source_address
from clients.load.stats import Histogram, RunStats
from server.auth import DeviceKind, verify
from tests.conftest import SECRET, LiveServer

pytestmark = pytest.mark.slow  # starts server or writer processes

REPO_ROOT = Path(__file__).resolve().parents[2]


async def companion(*args: str, limit_s: float = 90) -> tuple[int, str, str]:
    """Run ``companion ARGS`` (as ``python -m server.cli``); exit code, stdout, stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO_ROOT,
    )
    try:
        async with asyncio.timeout(limit_s):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_cli_run_counts_acks_and_pushes_and_prints_json(live_server: LiveServer) -> None:
    code, out, err = await companion(
        "loadtest",
        "--server",
        live_server.url,
        "--secret",
        SECRET,
        "--phones",
        "20",
        "--watches",
        "20",
        "--frame-rate",
        "4",
        "--batch",
        "2",
        "--changes-per-s",
        "20",
        "--ramp",
        "200",
        "--duration",
        "3",
        "--json",
    )
    assert code == 0, err
    report: dict[str, Any] = orjson.loads(out)
    counters = report["counters"]
    assert report["connections"]["opened"] == 40
    assert report["connections"]["open_at_end"] == 40
    assert report["errors"] == {}
    assert counters["acks"] > 0
    assert counters["frames_acked"] == counters["frames_sent"] > 0
    assert counters["changes"] > 0
    # 20 users, each with one phone and one watch subscribed: two pushes per change.
    assert report["pushes"]["expected_versions"] == 2 * counters["changes"]
    assert report["pushes"]["delivery_ratio"] == 1.0
    assert report["latency_ms"]["push"]["count"] == counters["deltas"]
    assert report["latency_ms"]["ack"]["p99"] > 0
    assert "conns 40/40" in err  # the live progress line


async def test_two_worker_processes_merge_their_numbers_and_report_the_generator_cpu(
    live_server: LiveServer,
) -> None:
    plan = LoadPlan(
        server=live_server.url,
        secret=SECRET,
        phones=6,
        watches=6,
        frame_rate=4,
        batch=2,
        changes_per_s=10,
        ramp=200,
        duration=2,
        processes=2,
    )
    ramped: list[int] = []
    report = await run_plan(plan, on_ramped=lambda: ramped.append(1))
    counters = report["counters"]
    assert ramped == [1]
    assert report["errors"] == {}
    assert report["connections"]["opened"] == 12  # 6 devices in each worker
    assert counters["frames_acked"] == counters["frames_sent"] > 0
    assert report["pushes"]["delivery_ratio"] == 1.0
    assert report["latency_ms"]["push"]["count"] == counters["deltas"] > 0
    assert report["generator_cpu_s"] > 0  # the workers' CPU and this process's


async def test_the_plans_in_flight_bound_reaches_the_driver_in_a_multi_process_run(
    live_server: LiveServer,
) -> None:
    # One change outstanding at a time, due every 0.5 ms: a commit's round trip is longer,
    # so changes fall due while one is out and are skipped (with the default 256, none is).
    plan = LoadPlan(
        server=live_server.url,
        secret=SECRET,
        watches=2,
        changes_per_s=2000,
        max_in_flight=1,
        ramp=200,
        duration=0.5,
        processes=2,
    )
    report = await run_plan(plan)
    counters = report["counters"]
    assert report["errors"] == {}
    assert counters["change_skipped"] > 0
    assert counters["changes"] + counters["change_skipped"] == 1000


async def test_cli_refuses_a_server_off_this_machine() -> None:
    code, out, err = await companion(
        "loadtest",
        "--server",
        "http://192.0.2.10:8765",
        "--secret",
        SECRET,
        "--watches",
        "1",
        "--duration",
        "1",
        limit_s=30,
    )
    assert code == 2
    assert "loopback only" in err
    assert out == ""


@pytest.mark.parametrize("url", ["http://192.0.2.10", "http://[2001:db8::1]:80", "ftp://127.0.0.1"])
def test_check_loopback_refuses_other_hosts(url: str) -> None:
    with pytest.raises(PlanError):
        check_loopback(url)


def test_check_loopback_accepts_loopback_names() -> None:
    assert check_loopback("http://127.0.0.1:8765") == "127.0.0.1"
    assert check_loopback("http://localhost:1") == "localhost"


async def test_longpolling_watches_see_changes(live_server: LiveServer) -> None:
    plan = LoadPlan(
        server=live_server.url,
        secret=SECRET,
        watches=5,
        watch_mode="longpoll",
        longpoll_wait=5,
        changes_per_s=10,
        duration=1.5,
        ramp=100,
    )
    report = await run_plan(plan)
    assert report["errors"] == {}
    assert report["counters"]["polls_changed"] > 0
    assert report["latency_ms"]["poll"]["count"] == report["counters"]["polls_changed"]


async def test_signed_tokens_verify_with_the_server_secret() -> None:
    token = await Tokens(SECRET).get("lt-7", "watch")
    principal = verify(token, SECRET, now_s=int(time.time()))
    assert principal.user_id == "lt-7"
    assert principal.device is DeviceKind.WATCH


def test_plan_bounds_are_enforced() -> None:
    with pytest.raises(PlanError, match="devices"):
        LoadPlan(secret=SECRET, watches=10**7).validate()
    with pytest.raises(PlanError, match="duration"):
        LoadPlan(secret=SECRET, watches=1, duration=10**6).validate()
    with pytest.raises(PlanError, match="secret"):
        LoadPlan(watches=1).validate()
    with pytest.raises(PlanError, match="in flight"):
        LoadPlan(secret=SECRET, watches=1, max_in_flight=0).validate()


def test_devices_past_the_port_range_leave_from_other_loopback_addresses() -> None:
    assert source_address(0, "127.0.0.1") is None
    assert source_address(25_000, "127.0.0.1") == ("127.0.0.2", 0)
    assert source_address(50_000, "127.0.0.1") == ("127.0.0.3", 0)


def test_histogram_percentiles_are_within_one_percent_and_merge() -> None:
    first, second = Histogram(), Histogram()
    for ms in range(1, 501):
        first.add(float(ms))
    for ms in range(501, 1001):
        second.add(float(ms))
    first.merge(second)
    assert first.count == 1000
    assert first.max == 1000.0
    for p, exact in ((50, 500), (99, 990)):
        assert abs(first.percentile(p) - exact) / exact <= 0.01
    stats = RunStats.from_dict(RunStats().to_dict())
    assert stats.histograms["push"].count == 0


def test_the_drivers_pool_grows_with_the_rate_within_its_bounds() -> None:
    # One request at a time per HTTP/1.1 connection, so a pool of n sustains n / round trip
    # changes/s: at 2,000/s a change may take 20 ms or more (16 connections: 8 ms).
    assert pool_size(10) == MIN_POOL
    assert pool_size(2000) / 2000 >= 0.020
    assert pool_size(10**6) == MAX_POOL
