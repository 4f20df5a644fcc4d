"""Handshake rate: how many devices a server lets in per second, against the raw anchor.

    python -m bench.handshakes        # 4,000 connections, 2 client processes, 256 in flight each
    python -m bench.handshakes --connections 8000 --servers companion,raw --processes 2
    git archive eb414e2 | tar -x -C /tmp/base && python -m bench.handshakes --base /tmp/base

For each server a fresh process is started (``companion serve`` with admission control
off, so what is measured is the handshake and not the admit rate; and the raw
``websockets`` server of :mod:`bench.raw_server`, the anchor). ``--processes`` client
processes then open ``--connections`` connections between them, at most ``--concurrency``
in flight per process, as fast as the server takes them, and keep them open. What a
connection must get through:

- **companion**: TCP accept, HTTP upgrade, token (JWT) check, then ``hello`` and the
  ``snapshot`` answer (a state read and its encoding): a device is *in* when its snapshot
  arrived; every device is its own user;
- **raw**: TCP accept and the HTTP upgrade (it has no token and no ``hello``).

Rounds per server: **first** (every token new to the server), then ``--again`` rounds of
**again** (all connections cut, then reopened with the same tokens: a reconnect storm's
case), reported as their median and their best. The rate of
a round is its connections / (last one in - first one started); the server's CPU per
connection is read from ``/proc`` (user + system, its threads included). With ``--base DIR``
the companion server of another source tree is measured in the same run (an A/B of a
change). Writes ``bench/results/handshakes.{json,md}``.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import sys
import time
from typing import Any

import uvloop

from bench.harness import SECRET, ServerProcess, cpu_seconds, free_port, write_results
from clients.connect.wsclient import HandshakeFailed, WSClient, open_ws
from clients.load.loadtest import raise_fd_limit
from clients.load.plan import Tokens, source_address
from clients.load.stats import markdown_table

ROUND_LIMIT_S = 120.0
"""The longest one round may take before the run gives up."""
HELLO = b'{"op":"hello","client":"bench"}'


BASE = "companion@base"
"""The companion server run from another source tree (``--base``): an A/B in the same run."""


def start(dialect: str, base: str | None = None) -> ServerProcess:
    # Admission control off: the handshake itself is measured, not the admit rate.
    env = {"COMPANION_ADMIT_RATE": "1000000", "COMPANION_ADMIT_BURST": "1000000"}
    if dialect == "companion":
        return ServerProcess.companion(env=env)
    if dialect == BASE:
        assert base is not None
        port = free_port()
        # The other tree first on the path (``-m`` would put this one's first).
        code = f"import sys; sys.path.insert(0, {base!r}); from server.cli import main; main()"
        argv = [sys.executable, "-c", code, "serve", "--port", str(port)]
        return ServerProcess(argv, port=port, health="/readyz", env=env, name="base")
    port = free_port()
    argv = [sys.executable, "-m", "bench.raw_server", "--port", str(port)]
    return ServerProcess(argv, port=port, name=dialect)


class Opener:
    """The connections of one client process: opened ``concurrency`` at a time."""

    def __init__(self, dialect: str, url: str, share: range, concurrency: int) -> None:
        self.dialect = dialect
        self.companion = dialect != "raw"
        self.ws_url = url.replace("http://", "ws://") + ("/v1/ws" if self.companion else "/")
        self.share = share
        self.concurrency = concurrency
        tokens = Tokens(SECRET)
        self.tokens = {i: tokens.sign(f"hs-{i}", "watch") for i in share} if self.companion else {}
        self.conns: list[WSClient] = []
        self.failed = 0

    async def round(self) -> tuple[float, float, int]:
        """Open every connection of the share; (first start, last in, failures), epoch s."""
        queue = list(self.share)
        queue.reverse()
        started = time.time()
        last = started
        self.failed = 0

        async def one(index: int) -> None:
            nonlocal last
            headers = {"Authorization": f"Bearer {self.tokens[index]}"} if self.tokens else {}
            arrived: asyncio.Future[None] = asyncio.get_running_loop().create_future()

            def on_text(conn: WSClient, data: bytes, now: float) -> None:
                if not arrived.done():
                    arrived.set_result(None)

            try:
                async with asyncio.timeout(30):
                    conn = await open_ws(
                        self.ws_url,
                        headers,
                        on_text,
                        lambda c, code: None,
                        local_addr=source_address(index, "127.0.0.1"),
                    )
                    self.conns.append(conn)
                    if self.companion:
                        conn.send_text(HELLO)
                        await arrived
            except (OSError, TimeoutError, HandshakeFailed):
                self.failed += 1
                return
            last = max(last, time.time())

        async def lane() -> None:
            while queue:
                await one(queue.pop())

        await asyncio.gather(*(lane() for _ in range(self.concurrency)))
        return started, last, self.failed

    async def cut(self) -> None:
        """Drop every connection (abort) and wait until they are gone."""
        conns, self.conns = self.conns, []
        for conn in conns:
            conn.abort()
        if conns:
            await asyncio.wait([c.closed for c in conns], timeout=10)


async def one_server(
    dialect: str,
    connections: int,
    processes: int,
    concurrency: int,
    again: int,
    base: str | None = None,
) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    with start(dialect, base) as server:
        # Warm-up: a few connections, so the first round does not pay for imports.
        warm = Opener(dialect, server.url, range(connections, connections + 20), 4)
        await warm.round()
        await warm.cut()
        out = context.Queue()
        names = ["first"] + ["again"] * again
        gos = [context.Event() for _ in names]
        workers = []
        for i in range(processes):
            share = range(i, connections, processes)
            proc = context.Process(
                target=_round_worker,
                args=(dialect, server.url, share, concurrency, out, gos),
                daemon=True,
            )
            proc.start()
            workers.append(proc)
        for _ in workers:  # each says it is ready (tokens signed)
            await _next(out, "ready")
        result: dict[str, Any] = {"server": dialect, "first": None, "again": []}
        for name, go in zip(names, gos, strict=True):
            loadavg = os.getloadavg()
            cpu0 = cpu_seconds(server.pid)
            go.set()
            reports, cuts = [], 0
            cpu = 0.0
            while len(reports) < len(workers) or cuts < len(workers):
                kind, value = await asyncio.to_thread(out.get, True, ROUND_LIMIT_S)
                if kind == "round":
                    reports.append(value)
                    if len(reports) == len(workers):
                        cpu = cpu_seconds(server.pid) - cpu0
                else:
                    cuts += 1
            first = min(r[0] for r in reports)
            last = max(r[1] for r in reports)
            failed = sum(r[2] for r in reports)
            ok = connections - failed
            took = last - first
            figures = {
                "connections": ok,
                "failed": failed,
                "seconds": round(took, 3),
                "per_s": round(ok / took, 1) if took > 0 else 0.0,
                "server_cpu_s": round(cpu, 3),
                "server_cpu_us_per_conn": round(cpu * 1e6 / max(ok, 1), 1),
                "loadavg": loadavg,
            }
            if name == "first":
                result["first"] = figures
            else:
                result["again"].append(figures)
        for proc in workers:
            proc.join(30)
    return result


async def _next(out: Any, kind: str) -> Any:
    """The next report of a client process, which must be of ``kind``."""
    got, value = await asyncio.to_thread(out.get, True, ROUND_LIMIT_S)
    if got != kind:
        raise RuntimeError(f"expected a {kind!r} report from a client process, got {got!r}")
    return value


def _round_worker(
    dialect: str, url: str, share: range, concurrency: int, out: Any, gos: list[Any]
) -> None:
    raise_fd_limit()

    async def main() -> None:
        opener = Opener(dialect, url, share, concurrency)
        out.put(("ready", None))
        for go in gos:
            await asyncio.to_thread(go.wait)
            out.put(("round", await opener.round()))
            await opener.cut()
            out.put(("cut", None))

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


def _summaries(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The rows of one server: its first round, and the median and best of the others (best:
    the highest rate and the lowest CPU per connection, which may come from different rounds:
    on a shared machine the best is the least disturbed)."""
    rows = {"first": result["first"]}
    again = result["again"]
    if again:
        rates = sorted(r["per_s"] for r in again)
        cpus = sorted(r["server_cpu_us_per_conn"] for r in again)
        loads = [r["loadavg"] for r in again]
        middle = len(again) // 2
        rows[f"again, median of {len(again)}"] = {
            "per_s": statistics.median(rates),
            "server_cpu_us_per_conn": statistics.median(cpus),
            "failed": sum(r["failed"] for r in again),
            "loadavg": loads[middle],
        }
        rows[f"again, best of {len(again)}"] = {
            "per_s": rates[-1],
            "server_cpu_us_per_conn": cpus[0],
            "failed": 0,
            "loadavg": min(loads),
        }
    return rows


def render(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    table = {x["server"]: _summaries(x) for x in results}
    raw = table.get("raw", {})
    rows = []
    for server, summaries in table.items():
        for name, r in summaries.items():
            anchor = raw.get(name)
            rows.append(
                [
                    server,
                    name,
                    f"{r['per_s']:,.0f}" + (f" ({r['failed']} failed)" if r["failed"] else ""),
                    f"{r['per_s'] / anchor['per_s']:.2f}x" if anchor else "-",
                    f"{r['server_cpu_us_per_conn']:,.0f} µs",
                    f"{r['server_cpu_us_per_conn'] / anchor['server_cpu_us_per_conn']:.2f}x"
                    if anchor
                    else "-",
                    " ".join(f"{x:.2f}" for x in r["loadavg"]),
                ]
            )
    headers = [
        "server",
        "round",
        "connections/s",
        "vs raw",
        "server CPU / conn",
        "vs raw",
        "load average",
    ]
    return (
        f"## Handshakes: {args.connections:,} connections per round, {args.processes} client "
        f"processes, {args.concurrency} in flight each\n\n"
        "companion: accept, upgrade, JWT, `hello` → `snapshot` (admission off); raw: accept "
        "and upgrade. *again*: the same tokens reconnecting after a cut "
        f"({args.again} rounds).\n\n" + markdown_table(headers, rows) + "\n"
    )


async def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    raise_fd_limit()
    results = []
    dialects = args.servers.split(",")
    if args.base:
        dialects.insert(1 if dialects[:1] == ["companion"] else 0, BASE)
    for dialect in dialects:
        results.append(
            await one_server(
                dialect, args.connections, args.processes, args.concurrency, args.again, args.base
            )
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=4000)
    parser.add_argument("--processes", type=int, default=2, help="client processes")
    parser.add_argument("--concurrency", type=int, default=256, help="in flight per process")
    parser.add_argument("--servers", default="companion,raw")
    parser.add_argument("--again", type=int, default=3, help="reconnecting rounds")
    parser.add_argument("--output", default="handshakes", help="results file name")
    parser.add_argument(
        "--base",
        help="another source tree (e.g. `git archive COMMIT | tar -x -C DIR`) whose companion "
        "server is measured too, as companion@base",
    )
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        results = runner.run(measure(args))
    markdown = render(results, args)
    print(markdown)
    print(write_results(args.output, {"runs": results, "args": vars(args)}, markdown))


if __name__ == "__main__":
    main()
