"""Ingest: frames per second through the WebSocket into the store, with ack latency.

    python -m bench.ingest                                     # SQLite, 10k..80k frames/s
    COMPANION_STORE=dynamodb AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:8000 \\
        python -m bench.ingest --rates 2000,5000,10000         # DynamoDB Local

For each offered rate, a fresh ``companion serve`` is started (SQLite, or DynamoDB when
``COMPANION_STORE=dynamodb`` and ``AWS_ENDPOINT_URL_DYNAMODB`` are set: the tables are
created first with ``companion tables create``), ``--phones`` phones connect and each sends
``frames`` messages of ``--batch`` frames, together offering that many frames per second
for ``--duration`` seconds. A frame counts as ingested when its batch is acked (the server
acks only durable frames: SQLite commits with ``synchronous=FULL``). Reported: offered and
acked frames/s (over the whole run, and over the sending window alone), ack latency (batch
sent → ack), the server's CPU share and the load generator's (all its ``--processes``
worker processes, default 2, and the parent), the server's CPU per acked frame (the figure
to compare on a shared machine, where the rates move with the neighbours' load), the load
average at the end, and the server's commit, state-read and avatar-cache counters.
Writes ``bench/results/ingest[-dynamodb].{json,md}``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
from typing import Any

import uvloop

from bench.harness import (
    REPO_ROOT,
    SECRET,
    ServerProcess,
    counters_line,
    cpu_seconds,
    load_average,
    scrape,
    write_results,
)
from clients.load.loadtest import run_plan
from clients.load.plan import LoadPlan
from clients.load.stats import fmt_ms, markdown_table

MESSAGES_PER_S = 5.0
"""Messages per phone per second (the server's rate limit is 20/s per connection)."""


def store_env() -> dict[str, str]:
    """The store the benchmark runs on, from the environment (SQLite unless DynamoDB)."""
    if os.environ.get("COMPANION_STORE") == "dynamodb":
        if not os.environ.get("AWS_ENDPOINT_URL_DYNAMODB"):
            raise SystemExit("COMPANION_STORE=dynamodb needs AWS_ENDPOINT_URL_DYNAMODB")
        return {
            "COMPANION_STORE": "dynamodb",
            "COMPANION_TABLE_PREFIX": os.environ.get("COMPANION_TABLE_PREFIX", "bench-ingest-"),
        }
    return {"COMPANION_STORE": "sqlite"}


async def one(rate: float, args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    batch = max(1, round(rate / args.phones / MESSAGES_PER_S))
    frame_rate = batch * MESSAGES_PER_S
    with ServerProcess.companion(env=env) as server:
        plan = LoadPlan(
            server=server.url,
            secret=SECRET,
            phones=args.phones,
            batch=batch,
            frame_rate=frame_rate,
            duration=args.duration,
            ramp=1000,
            phone_hello=False,
            prefix="ing-",
            processes=args.processes,
        )
        cpu0 = cpu_seconds(server.pid)
        report = await run_plan(plan)
        cpu = cpu_seconds(server.pid) - cpu0
        metrics = scrape(server.url)
    counters = report["counters"]
    seconds = report["elapsed_s"] - report["ramp_s"]
    ack = report["latency_ms"]["ack"]
    return {
        "offered_frames_per_s": args.phones * frame_rate,
        "phones": args.phones,
        "batch": batch,
        "frames_sent": counters.get("frames_sent", 0),
        "frames_acked": counters.get("frames_acked", 0),
        "acked_frames_per_s": round(counters.get("frames_acked", 0) / seconds),
        # The same acks over the sending window alone (``seconds`` also holds the worker
        # processes' start and the last acks' wait): what the server kept up with when
        # nothing was left unacked.
        "acked_in_window_per_s": round(counters.get("frames_acked", 0) / args.duration),
        "unacked_at_end": counters.get("frames_sent", 0) - counters.get("frames_acked", 0),
        "ack_ms": ack,
        "errors": report["errors"],
        "server_cpu_share": round(cpu / report["elapsed_s"], 2),
        "generator_processes": args.processes,
        "generator_cpu_share": report["generator_cpu_share"],
        "server_cpu_us_per_acked_frame": round(
            cpu / max(counters.get("frames_acked", 0), 1) * 1e6, 1
        ),
        "server_metrics": metrics,
        "load_average": load_average(),
    }


def render(rows: list[dict[str, Any]], store: str) -> str:
    table = [
        [
            f"{r['offered_frames_per_s']:,.0f}",
            f"{r['phones']} x {r['batch']}",
            f"{r['acked_frames_per_s']:,}",
            f"{r['acked_in_window_per_s']:,}",
            f"{r['unacked_at_end']:,}",
            fmt_ms(r["ack_ms"]["p50"]),
            fmt_ms(r["ack_ms"]["p99"]),
            fmt_ms(r["ack_ms"]["max"]),
            f"{r['server_cpu_share']:.2f}",
            f"{r['generator_cpu_share']:.2f}",
            f"{r['server_cpu_us_per_acked_frame']:.1f}",
            sum(r["errors"].values()),
            r["load_average"],
        ]
        for r in rows
    ]
    headers = [
        "offered frames/s",
        "phones x batch",
        "acked frames/s",
        "acked / sending window s",
        "unacked at end",
        "ack p50 ms",
        "ack p99 ms",
        "ack max ms",
        "server CPU",
        "generator CPU",
        "µs server CPU / acked frame",
        "errors",
        "load avg at end",
    ]
    counted = "\n".join(
        f"- {r['offered_frames_per_s']:,.0f} offered: {counters_line(r['server_metrics'])}"
        for r in rows
    )
    return (
        f"## Ingest into {store} over the WebSocket\n\n"
        f"Each phone sends {MESSAGES_PER_S:g} `frames` messages/s; a frame counts once "
        f"its batch is acked (durable).\n\n" + markdown_table(headers, table) + "\n\n"
        f"The server's counters at the end of each rate:\n\n{counted}\n"
    )


async def measure(args: argparse.Namespace, env: dict[str, str]) -> list[dict[str, Any]]:
    rows = []
    for rate in args.rates:
        row = await one(rate, args, env)
        print(
            f"offered {row['offered_frames_per_s']:>8,.0f} acked {row['acked_frames_per_s']:>8,}"
            f" frames/s, ack p99 {fmt_ms(row['ack_ms']['p99'])} ms",
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
        "--rates",
        default="10000,25000,50000,80000",
        type=lambda s: [float(x) for x in s.split(",")],
        help="offered frames/s, one run each",
    )
    parser.add_argument("--phones", type=int, default=200)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument(
        "--processes", type=int, default=2, help="load generator processes (phones split)"
    )
    args = parser.parse_args()
    env = store_env()
    if env["COMPANION_STORE"] == "dynamodb":
        subprocess.run(
            [sys.executable, "-m", "server.cli", "tables", "create"],
            env={**os.environ, **env},
            cwd=REPO_ROOT,
            check=True,
        )
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        rows = runner.run(measure(args, env))
    store = env["COMPANION_STORE"]
    markdown = render(rows, "DynamoDB Local" if store == "dynamodb" else "SQLite")
    print(markdown)
    name = "ingest" if store == "sqlite" else "ingest-dynamodb"
    print(write_results(name, {"store": store, "rows": rows}, markdown))


if __name__ == "__main__":
    main()
