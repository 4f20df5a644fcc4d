"""A reconnect storm: N devices lose their sockets at once and come back, while M devices
that stayed connected keep getting pushes.

    python -m bench.storm                       # 19,000 storm devices, 200 steady, 2 workers
    python -m bench.storm --devices 5000 --admit-rate 1500 --admit-burst 50
    python -m bench.storm --output storm-1500-50 --admit-rate 1500 --admit-burst 50

Starts ``companion serve`` (SQLite, memory broker) with the admission settings given (by
default the server's own defaults), opens
``--steady`` watches in this process and ``--devices`` watches spread over ``--workers``
worker processes (each a :class:`clients.load.devices.Fleet`, one user per watch, each
saying ``hello``). Once all are connected, state changes are committed for the steady
users at ``--rate`` per second through the demo route, and every worker cuts all its
sockets at the same moment (:meth:`~clients.load.devices.Fleet.drop_all`: what a dead node
or a network outage does to a fleet). Each device comes back under the clients' one
reconnect rule — after a loss a jittered pause of at most 0.5 s, after a ``503`` the
server's ``Retry-After`` plus up to 1 s of jitter — and is back when its snapshot arrived.

Reported: the time from the cut until every device is back, the ``503``s the server
answered, the push latency (commit → watch) of the steady devices during the storm, and the
server's peak RSS (sampled every 100 ms). The file-descriptor limit bounds N: the server
holds N + M sockets and a few files in one process. Writes ``bench/results/storm.{json,md}``
(``--output NAME``: ``NAME.{json,md}``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import multiprocessing
import os
import queue
import subprocess
import time
import urllib.request
from typing import Any

import uvloop

from bench.harness import SECRET, ServerProcess, cpu_seconds, rss_kib, write_results
from clients.load.devices import Fleet
from clients.load.driver import StateDriver
from clients.load.loadtest import raise_fd_limit
from clients.load.plan import LoadPlan, Tokens
from clients.load.stats import RunStats, fmt_ms, markdown_table
from server.settings import Settings

FD_HEADROOM = 200
"""File descriptors the server needs besides its sockets (store, logs, listening socket)."""
REFUSED = 'companion_handshake_rejects_total{reason="try later"}'
"""The server's count of handshakes refused by admission control."""
STORM_LIMIT_S = 120.0
"""The longest a storm may take before the run gives up on the missing devices."""


def _worker(plan: LoadPlan, share: range, out: Any, go: Any, done: Any) -> None:
    """A worker process: connect ``share``; on ``go`` cut them all; report when all are back."""
    raise_fd_limit()

    async def main() -> None:
        tokens = await Tokens(SECRET).all_for(plan)
        fleet = Fleet(plan, tokens, share)
        await fleet.ramp(plan.ramp)
        out.put(("ready", fleet.stats.counters["opened"], 0.0, {}))
        await asyncio.to_thread(go.wait)
        fleet.stats.reset()
        started = time.perf_counter()
        cut = fleet.drop_all()
        back = await fleet.wait_until(lambda s: s.counters["snapshots"] >= cut, STORM_LIMIT_S)
        took = time.perf_counter() - started
        out.put(("back" if back else "late", cut, took, fleet.stats.to_dict()))
        await asyncio.to_thread(done.wait)
        await fleet.stop()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


def _profile(pid: int, output: str, seconds: int) -> subprocess.Popen[bytes]:
    """Start ``py-spy`` on the server for the storm's first ``seconds`` (raw folded stacks
    to ``output``; summarise with a flame-graph tool)."""
    command = ["py-spy", "record", "--pid", str(pid), "--duration", str(seconds)]
    command += ["--rate", "250"]
    command += ["--format", "raw", "--output", output, "--nonblocking"]
    return subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _metric(url: str, sample: str) -> float:
    """One sample of the server's ``/metrics``, named with its labels (0 if absent)."""
    with urllib.request.urlopen(url + "/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            key, _, value = line.rpartition(" ")
            if key == sample:
                return float(value)
    return 0.0


async def _peak_rss(pid: int, stop: asyncio.Event) -> int:
    peak = 0
    while not stop.is_set():
        peak = max(peak, rss_kib(pid))
        try:
            async with asyncio.timeout(0.1):
                await stop.wait()
        except TimeoutError:
            pass
    return peak


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    limit = raise_fd_limit()
    devices = min(args.devices, limit - args.steady - FD_HEADROOM)
    env = {
        "COMPANION_ADMIT_RATE": str(args.admit_rate),
        "COMPANION_ADMIT_BURST": str(args.admit_burst),
    }
    if args.video is not None:
        env["COMPANION_VIDEO"] = args.video
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    go, done = context.Event(), context.Event()
    with ServerProcess.companion(env=env) as server:
        steady_plan = LoadPlan(
            server=server.url, secret=SECRET, watches=args.steady, ramp=500, prefix="steady-"
        )
        storm_plan = LoadPlan(
            server=server.url,
            secret=SECRET,
            watches=devices,
            ramp=args.ramp / args.workers,
            prefix="storm-",
        )
        tokens = await Tokens(SECRET).all_for(steady_plan)
        steady = Fleet(steady_plan, tokens, range(args.steady))
        await steady.ramp(steady_plan.ramp)
        workers = [
            context.Process(
                target=_worker,
                args=(storm_plan, range(i, devices, args.workers), out, go, done),
                daemon=True,
            )
            for i in range(args.workers)
        ]
        for worker in workers:
            worker.start()
        connected = 0
        for _ in workers:
            _, opened, _, _ = await asyncio.to_thread(out.get, True, 600)
            connected += opened
        rss_before = rss_kib(server.pid)
        refused_before = _metric(server.url, REFUSED)
        service = Tokens(SECRET).sign("bench", "service")
        users = [steady_plan.user_of(i) for i in range(args.steady)]
        # Before the storm: the steady devices' push latency on a quiet server, for scale.
        quiet = StateDriver(server.url, service, users, args.rate, RunStats())
        steady.commit_times = quiet.commit_times
        steady.stats.reset()
        await quiet.run(args.baseline_s)
        baseline = steady.stats.histograms["push"].summary()
        # The storm: changes keep coming for the steady users throughout (the driver runs for
        # a bounded window: an expected storm and some slack).
        driver_stats = RunStats()
        driver = StateDriver(server.url, service, users, args.rate, driver_stats)
        steady.commit_times = driver.commit_times
        steady.stats.reset()
        stop_rss = asyncio.Event()
        rss_task = asyncio.create_task(_peak_rss(server.pid, stop_rss))
        window = devices / args.admit_rate + 10.0
        driving = asyncio.create_task(driver.run(window))
        loadavg = os.getloadavg()
        cpu_before = cpu_seconds(server.pid)
        profiler = _profile(server.pid, args.profile, args.profile_s) if args.profile else None
        go.set()
        reports = []
        for _ in workers:
            try:
                reports.append(await asyncio.to_thread(out.get, True, STORM_LIMIT_S + 30))
            except queue.Empty:
                break
        storm_stats = RunStats.merged([RunStats.from_dict(r[3]) for r in reports])
        # The steady devices' pushes while the storm lasted (not after).
        steady_push = steady.stats.histograms["push"].summary()
        server_cpu = cpu_seconds(server.pid) - cpu_before
        stop_rss.set()
        peak = await rss_task
        refused = _metric(server.url, REFUSED) - refused_before
        await driving
        if profiler is not None:
            profiler.wait(30)
        done.set()
        for worker in workers:
            worker.join(30)
        await steady.stop()
    return {
        "devices": devices,
        "devices_asked": args.devices,
        "fd_limit": limit,
        "steady": args.steady,
        "workers": args.workers,
        "admit_rate": args.admit_rate,
        "admit_burst": args.admit_burst,
        "video": args.video or "default",
        "connected_before": connected,
        "cut": sum(r[1] for r in reports),
        "all_back": len(reports) == len(workers) and all(r[0] == "back" for r in reports),
        "back_s": round(max((r[2] for r in reports), default=float("nan")), 2),
        "refused_503": int(refused),
        "storm_errors": dict(storm_stats.errors.most_common(8)),
        "steady_push_ms": steady_push,
        "steady_push_quiet_ms": baseline,
        "steady_changes": driver_stats.counters["changes"],
        "server_cpu_s": round(server_cpu, 2),
        "server_cpu_ms_per_device": round(server_cpu * 1000 / max(devices, 1), 3),
        "rss_before_kib": rss_before,
        "rss_peak_kib": peak,
        "loadavg_at_storm": loadavg,
    }


def render(result: dict[str, Any]) -> str:
    push = result["steady_push_ms"]
    quiet = result["steady_push_quiet_ms"]
    rows = [
        [
            f"{result['devices']:,}",
            f"{result['admit_rate']:g} / {result['admit_burst']}",
            f"{result['back_s']:g} s" + ("" if result["all_back"] else " (not all)"),
            f"{result['refused_503']:,}",
            f"{push['count']:,}",
            fmt_ms(push["p50"]),
            fmt_ms(push["p99"]),
            fmt_ms(push["max"]),
            f"{result['rss_peak_kib'] / 1024:,.0f} MiB",
        ]
    ]
    headers = [
        "devices cut",
        "admit rate / burst",
        "all back after",
        "503s",
        "steady pushes",
        "push p50 ms",
        "push p99 ms",
        "push max ms",
        "peak RSS",
    ]
    load = " ".join(f"{x:.2f}" for x in result["loadavg_at_storm"])
    return (
        f"## Reconnect storm: {result['devices']:,} devices at once, "
        f"{result['steady']} steady\n\n"
        f"fd limit {result['fd_limit']:,} (asked for {result['devices_asked']:,} devices); "
        f"{result['workers']} client processes; avatar clips {result['video']}; "
        f"load average at the cut {load}; server CPU "
        f"during the storm {result['server_cpu_s']:g} s "
        f"({result['server_cpu_ms_per_device']:g} ms per device; "
        f"{result['server_cpu_s'] / max(result['back_s'], 0.001):.2f} of a core while it "
        f"lasted). Steady "
        f"devices' push latency before the storm (quiet server): p50 {fmt_ms(quiet['p50'])} ms,"
        f" p99 {fmt_ms(quiet['p99'])} ms ({quiet['count']:,} pushes).\n\n"
        + markdown_table(headers, rows)
        + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=19_000, help="devices in the storm")
    parser.add_argument("--steady", type=int, default=200, help="devices that stay connected")
    parser.add_argument("--workers", type=int, default=2, help="client processes for the storm")
    parser.add_argument("--rate", type=float, default=50.0, help="changes/s to steady users")
    parser.add_argument(
        "--baseline-s", type=float, default=3.0, help="seconds of pushes before the storm"
    )
    parser.add_argument("--ramp", type=float, default=1500.0, help="connects/s before the storm")
    defaults = {f.name: f.default for f in dataclasses.fields(Settings)}
    parser.add_argument("--admit-rate", type=float, default=defaults["admit_rate"])
    parser.add_argument("--admit-burst", type=int, default=defaults["admit_burst"])
    parser.add_argument("--output", default="storm", help="results file name")
    parser.add_argument(
        "--video",
        choices=["off", "local"],
        help="COMPANION_VIDEO of the server (default: its own, local: every new avatar's "
        "clip drawn with Pillow in a thread, beside the storm)",
    )
    parser.add_argument(
        "--profile", metavar="PATH", help="py-spy the server from the cut into PATH"
    )
    parser.add_argument("--profile-s", type=int, default=8, help="seconds of --profile")
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(measure(args))
    markdown = render(result)
    print(markdown)
    print(write_results(args.output, result, markdown))


if __name__ == "__main__":
    main()
