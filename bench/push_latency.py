"""Push latency and memory per idle connection: N watches subscribed, K state changes.

    python -m bench.push_latency                      # 1,000 watches, 1,000 changes at 100/s
    python -m bench.push_latency --subscribers 10000 --changes 10000 --rate 1000

Starts ``companion serve`` (SQLite store, memory broker) as a subprocess, opens
``--subscribers`` watches over WebSocket, one user each, each sending ``hello`` (so it is
subscribed and got its snapshot), and reads the server's RSS before and after: the
difference divided by N is the memory per idle connection. Then ``--changes`` state changes
are committed through the demo route at ``--rate`` per second, round-robin over the users,
and every delta's latency is taken from its server commit time ``t`` to its arrival at the
watch (one clock: all on loopback). The watches are spread over ``--processes`` load
generator processes (default 2; the driver of the changes runs in the parent), and the
server's and the generator's CPU are reported, and the server's CPU per change: its CPU
time from the moment every watch is connected to the end, divided by the changes committed
(with the load average: on a shared machine that figure moves with the neighbours). The
server's commit, state-read and avatar-cache counters are scraped from ``/metrics`` at the
end. ``--devices`` and ``--changes-per-s`` are other names of ``--subscribers`` and
``--rate``. Writes
``bench/results/push_latency[-SUFFIX].{json,md}``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import time
from typing import Any

import uvloop

from bench.harness import (
    SECRET,
    ServerProcess,
    counters_line,
    cpu_seconds,
    load_average,
    rss_kib,
    scrape,
    settle_memory,
    write_results,
)
from clients.load.devices import Fleet
from clients.load.driver import StateDriver
from clients.load.loadtest import run_plan
from clients.load.plan import LoadPlan, Tokens
from clients.load.stats import fmt_ms, latency_table, markdown_table

WARMUP_WATCHES = 20


async def idle_connections(
    server: ServerProcess, plan: LoadPlan, tokens: dict[tuple[str, str], str]
) -> tuple[Fleet, dict[str, Any]]:
    """Open the plan's watches; measure the server's RSS before and after."""
    count = plan.watches - WARMUP_WATCHES
    warm = Fleet(plan, tokens, range(count, plan.watches))
    await warm.ramp(1000)
    await warm.stop()
    settle_memory()
    before = rss_kib(server.pid)
    fleet = Fleet(plan, tokens, range(count))
    started = time.perf_counter()
    await fleet.ramp(plan.ramp)
    ramp_s = time.perf_counter() - started
    # Every watch is subscribed once its snapshot arrived.
    await fleet.wait_until(lambda s: s.counters["snapshots"] >= count, 10)
    after = rss_kib(server.pid)
    opened = fleet.stats.counters["opened"]
    return fleet, {
        "opened": opened,
        "snapshots": fleet.stats.counters["snapshots"],
        "ramp_s": round(ramp_s, 2),
        "open_rate_per_s": round(opened / ramp_s, 1),
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_connection": round((after - before) / max(opened, 1), 2),
    }


async def measure_processes(args: argparse.Namespace) -> dict[str, Any]:
    """The same run with the watches spread over ``--processes`` load generator processes
    (:func:`~clients.load.loadtest.run_plan`; the driver runs in this one)."""
    with ServerProcess.companion() as server:
        warm_plan = LoadPlan(
            server=server.url, secret=SECRET, watches=WARMUP_WATCHES, prefix="pl-warm-"
        )
        warm = Fleet(warm_plan, await Tokens(SECRET).all_for(warm_plan), range(WARMUP_WATCHES))
        await warm.ramp(1000)
        await warm.stop()
        settle_memory()
        before = rss_kib(server.pid)
        ramped: dict[str, float] = {}

        def on_ramped() -> None:
            # The changes start now: the server's CPU from here on is what they cost.
            ramped["rss"] = rss_kib(server.pid)
            ramped["cpu"] = cpu_seconds(server.pid)
            ramped["at"] = time.perf_counter()

        plan = LoadPlan(
            server=server.url,
            secret=SECRET,
            watches=args.subscribers,
            ramp=args.ramp,
            duration=args.changes / args.rate,
            changes_per_s=args.rate,
            max_in_flight=args.max_in_flight,
            prefix="pl-",
            processes=args.processes,
        )
        cpu0 = cpu_seconds(server.pid)
        report = await run_plan(plan, on_ramped=on_ramped)
        cpu_end, ended = cpu_seconds(server.pid), time.perf_counter()
        server_cpu = cpu_end - cpu0
        rss_end = rss_kib(server.pid)
        metrics = scrape(server.url)
    stats = report["_stats"]
    committed = stats.counters["changes"]
    changes_cpu = cpu_end - ramped.get("cpu", cpu0)
    changes_wall = ended - ramped.get("at", ended)
    opened = report["connections"]["opened"]
    after = int(ramped.get("rss", rss_end))
    memory = {
        "opened": opened,
        "snapshots": stats.counters["snapshots"],
        "ramp_s": report["ramp_s"],
        "open_rate_per_s": report["connections"]["open_rate_per_s"],
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_connection": round((after - before) / max(opened, 1), 2),
        "rss_end_kib": rss_end,
    }
    return {
        "subscribers": args.subscribers,
        "changes_requested": args.changes,
        "max_in_flight": args.max_in_flight,
        "changes_skipped": stats.counters.get("change_skipped", 0),
        "rate_per_s": args.rate,
        "changes_committed": stats.counters["changes"],
        "change_errors": dict(stats.errors),
        "deltas_received": stats.counters["deltas"],
        "versions_pushed": stats.counters["versions_pushed"],
        "commit_seconds": round(plan.duration, 2),
        "memory": memory,
        "latency_ms": {name: h.summary() for name, h in stats.histograms.items()},
        "push": stats.histograms["push"].summary(),
        "generator_processes": args.processes,
        "generator_cpu_share": report["generator_cpu_share"],
        "server_cpu_share": round(server_cpu / report["elapsed_s"], 2),
        "changes_cpu_s": round(changes_cpu, 2),
        "changes_wall_s": round(changes_wall, 2),
        "server_cores_during_changes": round(changes_cpu / max(changes_wall, 1e-9), 2),
        "cpu_us_per_change": round(changes_cpu / max(committed, 1) * 1e6, 1),
        "server_metrics": metrics,
        "load_average": load_average(),
        "_stats": stats,
    }


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    if args.processes > 1:
        return await measure_processes(args)
    plan = LoadPlan(
        server="http://127.0.0.1:1",  # replaced below, once the port is known
        secret=SECRET,
        watches=args.subscribers + WARMUP_WATCHES,  # the warm-up watches come last
        ramp=args.ramp,
        duration=args.changes / args.rate,
        changes_per_s=args.rate,
        prefix="pl-",
    )
    with ServerProcess.companion() as server:
        plan = dataclasses.replace(plan, server=server.url)
        tokens = await Tokens(SECRET).all_for(plan)
        fleet, memory = await idle_connections(server, plan, tokens)
        stats = fleet.stats
        users = [f"{plan.prefix}{i}" for i in range(args.subscribers)]
        driver = StateDriver(
            server.url,
            tokens[(plan.driver_user, "service")],
            users,
            args.rate,
            stats,
            max_in_flight=args.max_in_flight,
        )
        started = time.perf_counter()
        await driver.run(plan.duration + 1, count=args.changes)
        elapsed = time.perf_counter() - started
        await fleet.wait_until(lambda s: s.counters["versions_pushed"] >= s.counters["changes"], 5)
        rss_end = rss_kib(server.pid)
        await fleet.stop()
    push = stats.histograms["push"].summary()
    return {
        "subscribers": args.subscribers,
        "changes_requested": args.changes,
        "max_in_flight": args.max_in_flight,
        "changes_skipped": stats.counters.get("change_skipped", 0),
        "rate_per_s": args.rate,
        "changes_committed": stats.counters["changes"],
        "change_errors": dict(stats.errors),
        "deltas_received": stats.counters["deltas"],
        "versions_pushed": stats.counters["versions_pushed"],
        "commit_seconds": round(elapsed, 2),
        "memory": {**memory, "rss_end_kib": rss_end},
        "latency_ms": {name: h.summary() for name, h in stats.histograms.items()},
        "push": push,
        "_stats": stats,
    }


def render(result: dict[str, Any]) -> str:
    m, p = result["memory"], result["push"]
    summary = markdown_table(
        ["figure", "value"],
        [
            ["subscribers (watches with hello, one user each)", result["subscribers"]],
            [
                "state changes committed",
                f"{result['changes_committed']} at {result['rate_per_s']:g}/s "
                f"({result['changes_skipped']} skipped: {result['max_in_flight']} in flight)",
            ],
            ["deltas received", result["deltas_received"]],
            ["push latency p50 (ms)", fmt_ms(p["p50"])],
            ["push latency p99 (ms)", fmt_ms(p["p99"])],
            ["push latency max (ms)", fmt_ms(p["max"])],
            [
                "server RSS before / after connecting (MiB)",
                f"{m['rss_before_kib'] / 1024:.1f} / {m['rss_after_kib'] / 1024:.1f}",
            ],
            ["memory per idle connection (KiB)", f"{m['kib_per_connection']:.1f}"],
            ["connections opened / s", m["open_rate_per_s"]],
            [
                "server CPU per change, during the changes (µs)",
                f"{result.get('cpu_us_per_change', '-')}"
                f" ({result.get('server_cores_during_changes', '-')} cores)",
            ],
            ["server counters at the end", counters_line(result.get("server_metrics", {}))],
            ["load average at the end", result.get("load_average", "-")],
            [
                "server CPU / load generator CPU (cores, whole run)",
                f"{result.get('server_cpu_share', '-')} / {result.get('generator_cpu_share', '-')}"
                f" ({result.get('generator_processes', 1)} generator processes)",
            ],
        ],
    )
    return (
        f"## Push latency, {result['subscribers']} subscribers\n\n{summary}\n\n"
        f"All latencies (ms): push = server commit time `t` → delta received; change = the "
        f"demo POST's round trip; connect = TCP + WebSocket handshake.\n\n"
        f"{latency_table(result['_stats'])}\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscribers", "--devices", dest="subscribers", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=1000)
    parser.add_argument(
        "--rate",
        "--changes-per-s",
        dest="rate",
        type=float,
        default=100.0,
        help="state changes per second",
    )
    parser.add_argument("--ramp", type=float, default=1000.0, help="connections per second")
    parser.add_argument("--suffix", default="", help="results file name suffix")
    parser.add_argument(
        "--max-in-flight",
        type=int,
        default=256,
        help="changes outstanding at once; a change due past it is skipped and counted",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=2,
        help="load generator processes for the watches (1: all in this process, as before)",
    )
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(measure(args))
    markdown = render(result)
    print(markdown)
    name = "push_latency" + (f"-{args.suffix}" if args.suffix else "")
    result.pop("_stats")
    print(write_results(name, result, markdown))


if __name__ == "__main__":
    main()
