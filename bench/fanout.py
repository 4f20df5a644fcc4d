"""Fan-out: this server vs a raw ``websockets`` broadcast server vs python-socketio.

    python -m bench.fanout                                    # 1k, 5k, 10k subscribers
    python -m bench.fanout --sizes 1000,5000,10000,19800 --duration 10

For each server and each size N, a fresh server process is started (as a subprocess,
``COMPANION_LOG_LEVEL=warning``), N subscribers connect (all of them watches of one user
for the companion server, so one state change is one broadcast) and its RSS is read before
and after: the difference / N is the memory per idle connection. Then broadcast rounds run
closed-loop for ``--duration`` seconds: trigger one broadcast, wait until all N subscribers
have it, trigger the next. Delivered messages/s = messages received / time of the rounds;
latency = the server's send (companion: commit) time ``t`` → arrival. Client and servers
share this machine's cores; the client code is the same for all three
(:mod:`bench.subscribers`), spread over ``--processes`` worker processes (default 2, see
:mod:`bench.subscriber_pool`) so that one client core is not what the figures measure; the
client CPU reported is the sum over them. Writes ``bench/results/fanout.{json,md}``.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
from typing import Any

import uvloop

from bench.harness import SECRET, ServerProcess, cpu_seconds, free_port, rss_kib, write_results
from bench.subscriber_pool import SubscriberPool
from bench.subscribers import DIALECTS, Subscribers, Trigger
from clients.load.loadtest import raise_fd_limit
from clients.load.plan import Tokens
from clients.load.stats import fmt_ms, markdown_table

UNMETERED = {"COMPANION_ADMIT_RATE": "1000000", "COMPANION_ADMIT_BURST": "1000000"}
"""Handshake admission out of the way of the subscribers' ramp."""

WARMUP = 20
ROUND_TIMEOUT_S = 15.0


def start(dialect: str) -> ServerProcess:
    if dialect == "companion":
        # The subscribers open at --ramp a second, past the default handshake admission
        # (storm control, measured by bench/storm.py): this bench measures fan-out.
        return ServerProcess.companion(env=UNMETERED)
    port = free_port()
    module = {"raw": "bench.raw_server", "socketio": "bench.socketio_server"}[dialect]
    return ServerProcess(
        [sys.executable, "-m", module, "--port", str(port)], port=port, name=dialect
    )


async def one(
    dialect: str, size: int, duration: float, ramp: float, processes: int = 1
) -> dict[str, Any]:
    """Measure one server at one size, the subscribers in ``processes`` processes."""
    tokens = Tokens(SECRET)
    watch = tokens.sign("fan", "watch") if dialect == "companion" else ""
    service = tokens.sign("bench", "service") if dialect == "companion" else ""
    with start(dialect) as server:
        warm = Subscribers(dialect, server.url, watch)
        await warm.open(WARMUP, 1000)
        await warm.close()
        before = rss_kib(server.pid)
        pool = SubscriberPool(dialect, server.url, watch, processes) if processes > 1 else None
        subs: Subscribers | SubscriberPool = pool or Subscribers(dialect, server.url, watch)
        ramp_s = await subs.open(size, ramp)
        ready = subs.ready
        after = rss_kib(server.pid)
        trigger = Trigger(dialect, server.url, service)
        await trigger.open()
        rounds = timeouts = 0
        cpu0 = cpu_seconds(server.pid)
        client0 = _client_cpu() + (await pool.cpu_seconds() if pool else 0.0)
        started = time.perf_counter()
        while time.perf_counter() - started < duration:
            number = await trigger.fire()
            rounds += 1
            if not await subs.wait_round(number, ready, ROUND_TIMEOUT_S):
                timeouts += 1
                break
        elapsed = time.perf_counter() - started
        server_cpu = cpu_seconds(server.pid) - cpu0
        client_cpu = _client_cpu() + (await pool.cpu_seconds() if pool else 0.0) - client0
        await trigger.close()
        if pool is not None:
            await pool.collect()
        await subs.close()
    summary = subs.latency.summary()
    return {
        "server": dialect,
        "subscribers": size,
        "client_processes": processes,
        "ready": ready,
        "connect_errors": dict(subs.errors),
        "ramp_s": round(ramp_s, 2),
        "rounds": rounds,
        "round_timeouts": timeouts,
        "delivered": subs.delivered,
        "seconds": round(elapsed, 3),
        "messages_per_s": round(subs.delivered / elapsed),
        "latency_ms": summary,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_connection": round((after - before) / max(ready, 1), 2),
        "server_cpu_share": round(server_cpu / elapsed, 2),
        "client_cpu_share": round(client_cpu / elapsed, 2),
    }


def _client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def render(rows: list[dict[str, Any]]) -> str:
    by_size: dict[int, dict[str, dict[str, Any]]] = {}
    for row in rows:
        by_size.setdefault(row["subscribers"], {})[row["server"]] = row
    table = []
    for size, servers in sorted(by_size.items()):
        raw = servers.get("raw", {}).get("messages_per_s")
        sio = servers.get("socketio", {}).get("messages_per_s")
        for name in DIALECTS:
            if (r := servers.get(name)) is None:
                continue
            lat = r["latency_ms"]
            table.append(
                [
                    f"{size:,}",
                    name,
                    f"{r['ready']:,}",
                    f"{r['messages_per_s']:,}",
                    f"{r['messages_per_s'] / raw:.2f}" if raw else "-",
                    f"{r['messages_per_s'] / sio:.2f}" if sio else "-",
                    fmt_ms(lat["p50"]),
                    fmt_ms(lat["p99"]),
                    f"{r['kib_per_connection']:.1f}",
                    f"{r['server_cpu_share']:.2f}",
                    f"{r['client_cpu_share']:.2f}",
                ]
            )
    headers = [
        "subscribers",
        "server",
        "connected",
        "delivered msg/s",
        "vs raw",
        "vs socketio",
        "p50 ms",
        "p99 ms",
        "KiB/conn",
        "server CPU",
        "client CPU",
    ]
    return (
        "## Fan-out (closed-loop broadcast rounds)\n\n"
        + markdown_table(headers, table)
        + (
            "\n\nserver/client CPU: CPU seconds per wall second during the rounds "
            "(1.00 = one core busy); client CPU is the sum over the load generator's "
            "processes.\n"
        )
    )


async def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for size in args.sizes:
        for dialect in args.servers:
            row = await one(dialect, size, args.duration, args.ramp, args.processes)
            print(
                f"{dialect:>9} {size:>6}: {row['messages_per_s']:>8,} msg/s "
                f"p50 {fmt_ms(row['latency_ms']['p50'])} p99 {fmt_ms(row['latency_ms']['p99'])}"
                f" ms, {row['kib_per_connection']:.1f} KiB/conn",
                file=sys.stderr,
                flush=True,
            )
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", default="1000,5000,10000", type=lambda s: [int(x) for x in s.split(",")]
    )
    parser.add_argument("--servers", default=",".join(DIALECTS), type=lambda s: s.split(","))
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of rounds")
    parser.add_argument("--ramp", type=float, default=2000.0, help="connections per second")
    parser.add_argument("--output", default="fanout", help="results file name")
    parser.add_argument(
        "--processes",
        type=int,
        default=2,
        help="subscriber processes (1: in this process, as before)",
    )
    args = parser.parse_args()
    limit = raise_fd_limit()
    if max(args.sizes) + 100 > limit:
        parser.error(f"the open-file limit is {limit}: at most {limit - 100} subscribers")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        rows = runner.run(measure(args))
    markdown = render(rows)
    print(markdown)
    print(write_results(args.output, {"rows": rows}, markdown))


if __name__ == "__main__":
    main()
