"""``companion loadtest``: phones, watches and state changes against a server on loopback.

    companion loadtest --server http://127.0.0.1:8765 --secret "$COMPANION_SECRET" \\
        --phones 1000 --watches 1000 --changes-per-s 100 --ramp 500 --duration 30

Opens the devices at ``--ramp`` connections per second (see :mod:`clients.load.devices`),
then for ``--duration`` seconds commits ``--changes-per-s`` state changes (see
:mod:`clients.load.driver`), prints a progress line every second on stderr, and ends with a
table of connection figures and latencies (p50/p95/p99/max), or ``--json``. With
``--processes K`` the devices are spread over K worker processes (each on uvloop) and the
driver runs in this one; their numbers are merged. Every run is bounded (devices,
duration, rates) and refuses a server that is not on this machine.

:func:`run_plan` is the same run for programs (the benchmarks).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import multiprocessing
import queue
import resource
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
import uvloop

from clients.load.devices import Fleet
from clients.load.driver import StateDriver
from clients.load.plan import WATCH_MODES, LoadPlan, PlanError, Tokens
from clients.load.stats import RunStats, latency_table, markdown_table, progress_line

DESCRIPTION = """\
Phones, watches and state changes against a server on this machine.

  companion loadtest --server http://127.0.0.1:8765 --secret "$COMPANION_SECRET" \\
      --phones 1000 --watches 1000 --changes-per-s 100 --ramp 500 --duration 30

Opens the devices at --ramp connections per second, then for --duration seconds commits
--changes-per-s state changes, prints a progress line every second on stderr, and ends
with a table of connection figures and latencies (p50/p95/p99/max), or JSON with --json.
With --processes K the devices are spread over K worker processes and their numbers are
merged. Every run is bounded (devices, duration, rates) and refuses a server that is not
on this machine.
"""
"""What ``companion loadtest --help`` prints: plain text (the module docstring is markup)."""

EXIT_USAGE = 2
SETTLE_S = 3.0
"""After the last change: how long to wait for outstanding acks before closing."""


def own_cpu_seconds() -> float:
    """User + system CPU seconds this process has used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def raise_fd_limit() -> int:
    """Raise this process's open-file limit to its hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# -- one process ---------------------------------------------------------------------


def _worker(
    plan: LoadPlan, tokens: dict[tuple[str, str], str], index: int, out: Any, stop: Any
) -> None:
    """A worker process: run its share of the devices until ``stop`` is set."""
    raise_fd_limit()
    share = range(index, plan.devices, plan.processes)
    ramp = plan.ramp / plan.processes

    async def main() -> None:
        began = own_cpu_seconds()
        fleet = Fleet(plan, tokens, share)
        await fleet.ramp(ramp)
        out.put(("ramped", index, fleet.ramp_seconds, fleet.stats.to_dict()))
        while not await asyncio.to_thread(stop.wait, 1.0):
            out.put(("progress", index, 0.0, fleet.stats.to_dict()))
        await fleet.settle(SETTLE_S)
        await fleet.stop()
        fleet.stats.count("cpu_us", round((own_cpu_seconds() - began) * 1e6))
        out.put(("final", index, fleet.ramp_seconds, fleet.stats.to_dict()))

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


# -- the run -------------------------------------------------------------------------


async def run_plan(
    plan: LoadPlan,
    *,
    progress: Callable[[str], None] | None = None,
    on_ramped: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Run ``plan`` and return its report (what ``--json`` prints).

    ``on_ramped`` is called once every device is connected, before the changes start (a
    benchmark reads the server's memory there). Raises :class:`PlanError` for a plan that
    must not run.
    """
    plan.validate()
    began_cpu = own_cpu_seconds()
    tokens = await Tokens(plan.secret, plan.token_cmd).all_for(plan)
    users = [f"{plan.prefix}{i}" for i in range(plan.user_count)]
    stats = RunStats()
    driver = (
        StateDriver(
            plan.server,
            tokens[(plan.driver_user, "service")],
            users,
            plan.changes_per_s,
            stats,
            max_in_flight=plan.max_in_flight,
        )
        if plan.changes_per_s
        else None
    )
    started = time.perf_counter()
    if plan.processes == 1:
        worker_stats, ramp_s = await _run_here(
            plan, tokens, driver, stats, started, progress, on_ramped
        )
    else:
        worker_stats, ramp_s = await _run_workers(
            plan, tokens, driver, stats, started, progress, on_ramped
        )
    total = RunStats.merged([stats, *worker_stats]) if plan.processes > 1 else stats
    total.count("cpu_us", round((own_cpu_seconds() - began_cpu) * 1e6))
    return _report(plan, total, ramp_s, time.perf_counter() - started, driver)


async def _ticker(
    started: float, target: int, current: Callable[[], RunStats], progress: Callable[[str], None]
) -> None:
    while True:
        await asyncio.sleep(1.0)
        progress(progress_line(time.perf_counter() - started, target, current()))


async def _run_here(
    plan: LoadPlan,
    tokens: dict[tuple[str, str], str],
    driver: StateDriver | None,
    stats: RunStats,
    started: float,
    progress: Callable[[str], None] | None,
    on_ramped: Callable[[], None] | None = None,
) -> tuple[list[RunStats], float]:
    commit_times = driver.commit_times if driver else None
    fleet = Fleet(plan, tokens, range(plan.devices), stats=stats, commit_times=commit_times)
    ticker = (
        asyncio.create_task(_ticker(started, plan.devices, lambda: stats, progress))
        if progress
        else None
    )
    try:
        await fleet.ramp(plan.ramp)
        if on_ramped is not None:
            on_ramped()
        if driver is not None:
            await driver.run(plan.duration)
        else:
            await asyncio.sleep(plan.duration)
        await fleet.settle(SETTLE_S)
    finally:
        if ticker is not None:
            ticker.cancel()
        await fleet.stop()
    return [], fleet.ramp_seconds


async def _run_workers(
    plan: LoadPlan,
    tokens: dict[tuple[str, str], str],
    driver: StateDriver | None,
    stats: RunStats,
    started: float,
    progress: Callable[[str], None] | None,
    on_ramped: Callable[[], None] | None = None,
) -> tuple[list[RunStats], float]:
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    stop = context.Event()
    workers = [
        context.Process(target=_worker, args=(plan, tokens, i, out, stop), daemon=True)
        for i in range(plan.processes)
    ]
    for worker in workers:
        worker.start()
    latest: dict[int, RunStats] = {}
    ramps: dict[int, float] = {}
    finals: dict[int, RunStats] = {}
    last_print = time.perf_counter()

    async def collect(until: Callable[[], bool], limit_s: float) -> None:
        nonlocal last_print
        deadline = time.perf_counter() + limit_s
        while not until() and time.perf_counter() < deadline:
            try:
                kind, index, ramp_s, data = await asyncio.to_thread(out.get, True, 0.5)
            except queue.Empty:
                if not any(w.is_alive() for w in workers):
                    break
                continue
            latest[index] = RunStats.from_dict(data)
            if kind == "ramped":
                ramps[index] = ramp_s
            elif kind == "final":
                finals[index] = latest[index]
            if progress and time.perf_counter() - last_print >= 1.0:
                last_print = time.perf_counter()
                progress(
                    progress_line(
                        last_print - started,
                        plan.devices,
                        RunStats.merged([stats, *latest.values()]),
                    )
                )

    try:
        await collect(lambda: len(ramps) == len(workers), plan.devices / plan.ramp * 2 + 60)
        if on_ramped is not None:
            on_ramped()
        if driver is not None:
            driven = False

            async def drive() -> None:
                nonlocal driven
                try:
                    await driver.run(plan.duration)
                finally:
                    driven = True

            # One reader of the queue at a time: the collector stops by itself once the
            # driver is done (a cancelled reader thread could swallow a worker's report).
            await asyncio.gather(drive(), collect(lambda: driven, plan.duration + 60))
        else:
            await collect(lambda: False, plan.duration)
    finally:
        stop.set()
        await collect(lambda: len(finals) == len(workers), SETTLE_S + 30)
        for worker in workers:
            await asyncio.to_thread(worker.join, 10)
            if worker.is_alive():
                worker.kill()
    missing = set(range(len(workers))) - set(finals)
    if missing:
        raise RuntimeError(f"load workers {sorted(missing)} did not report")
    return list(finals.values()), max(ramps.values(), default=0.0)


def _report(
    plan: LoadPlan, stats: RunStats, ramp_s: float, elapsed: float, driver: StateDriver | None
) -> dict[str, Any]:
    counters = Counter(stats.counters)
    changes_by_user = driver.changes_by_user if driver else Counter()
    expected = sum(
        n * plan.subscribers_of(int(user.removeprefix(plan.prefix)))
        for user, n in changes_by_user.items()
    )
    ws_devices = plan.phones + (plan.watches if plan.watch_mode == "ws" else 0)
    return {
        "plan": {k: v for k, v in dataclasses.asdict(plan).items() if k != "secret"},
        "elapsed_s": round(elapsed, 3),
        "ramp_s": round(ramp_s, 3),
        "generator_cpu_s": round(counters["cpu_us"] / 1e6, 3),
        "generator_cpu_share": round(counters["cpu_us"] / 1e6 / elapsed, 2) if elapsed else 0.0,
        "connections": {
            "target": ws_devices,
            "opened": counters["opened"],
            "open_at_end": counters["open_at_stop"],
            "open_rate_per_s": round(min(counters["opened"], ws_devices) / ramp_s, 1)
            if ramp_s
            else 0.0,
            "reconnects": counters["reconnects"],
            "closed_by_server": counters["closed_by_server"],
        },
        "errors": dict(stats.errors),
        "counters": dict(counters),
        "pushes": {
            "expected_versions": expected,
            "versions_pushed": counters["versions_pushed"],
            "delivery_ratio": round(counters["versions_pushed"] / expected, 4)
            if expected
            else None,
        },
        "latency_ms": {name: h.summary() for name, h in stats.histograms.items()},
        "_stats": stats,
    }


def render(report: dict[str, Any]) -> str:
    """The final tables of a report, for people."""
    c, conn, counters = report["plan"], report["connections"], report["counters"]
    lines = [
        f"loadtest: {c['phones']} phones, {c['watches']} watches ({c['watch_mode']}), "
        f"{c['changes_per_s']:g} changes/s, {report['elapsed_s']:.1f} s",
        "",
        markdown_table(
            ["connections", "value"],
            [
                ["target (WebSocket)", conn["target"]],
                ["opened", conn["opened"]],
                ["open at end", conn["open_at_end"]],
                ["open rate /s", conn["open_rate_per_s"]],
                ["reconnects", conn["reconnects"]],
                ["closed by server", conn["closed_by_server"]],
                [
                    "frames sent / acked",
                    f"{counters.get('frames_sent', 0)} / {counters.get('frames_acked', 0)}",
                ],
                ["changes committed", counters.get("changes", 0)],
                ["deltas received", counters.get("deltas", 0)],
                ["delivery ratio", report["pushes"]["delivery_ratio"]],
                ["polls (requests)", counters.get("requests", 0)],
                ["errors", sum(report["errors"].values())],
                [
                    "load generator CPU (all processes)",
                    f"{report['generator_cpu_s']:.1f} s"
                    f" ({report['generator_cpu_share']:.2f} of a core)",
                ],
            ],
        ),
        "",
        latency_table(report["_stats"]),
    ]
    if report["errors"]:
        lines += ["", "errors: " + ", ".join(f"{k} x{v}" for k, v in report["errors"].items())]
    return "\n".join(lines)


# -- command line --------------------------------------------------------------------


def add_parser(sub: Any) -> None:
    """Register ``companion loadtest``."""
    p = sub.add_parser(
        "loadtest",
        help="load generator (loopback servers only)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--server", default="http://127.0.0.1:8765", help="server base URL")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--secret", help="the server's COMPANION_SECRET: tokens are signed here")
    who.add_argument(
        "--token-cmd",
        help="command printing a token, with {user} and {device}, "
        "e.g. 'companion token {user} --device {device}' (one run per user)",
    )
    p.add_argument("--phones", type=int, default=0, help="phones streaming frames")
    p.add_argument("--frame-rate", type=float, default=1.0, help="frames/s per phone")
    p.add_argument("--batch", type=int, default=5, help="frames per message")
    p.add_argument("--watches", type=int, default=0, help="watches waiting for state")
    p.add_argument(
        "--watch-mode",
        choices=WATCH_MODES,
        default="ws",
        help="how watches learn of changes: ws (a WebSocket), poll, longpoll (REST) or legacy"
        " (the old polling API); default ws",
    )
    p.add_argument("--poll-interval", type=float, default=30.0, help="seconds between polls")
    p.add_argument("--longpoll-wait", type=float, default=25.0, help="?wait= of a long-poll")
    p.add_argument(
        "--users",
        type=int,
        default=0,
        help="distinct users (default: one per device of the larger kind)",
    )
    p.add_argument("--changes-per-s", type=float, default=0.0, help="state changes per second")
    p.add_argument(
        "--max-in-flight",
        type=int,
        default=256,
        help="state changes outstanding at once; one due past it is skipped and counted",
    )
    p.add_argument("--ramp", type=float, default=500.0, help="connections opened per second")
    p.add_argument("--duration", type=float, default=10.0, help="seconds after the ramp")
    p.add_argument("--processes", type=int, default=1, help="worker processes for devices")
    p.add_argument("--no-phone-hello", action="store_true", help="phones do not subscribe")
    p.add_argument("--prefix", default="lt-", help="user id prefix")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Run ``companion loadtest``; exit 2 for a plan that must not run."""
    plan = LoadPlan(
        server=args.server,
        secret=args.secret,
        token_cmd=args.token_cmd,
        phones=args.phones,
        frame_rate=args.frame_rate,
        batch=args.batch,
        watches=args.watches,
        watch_mode=args.watch_mode,
        poll_interval=args.poll_interval,
        longpoll_wait=args.longpoll_wait,
        users=args.users,
        changes_per_s=args.changes_per_s,
        max_in_flight=args.max_in_flight,
        ramp=args.ramp,
        duration=args.duration,
        processes=args.processes,
        phone_hello=not args.no_phone_hello,
        prefix=args.prefix,
    )
    limit = raise_fd_limit()
    if plan.devices // plan.processes + 64 > limit:
        print(
            f"companion loadtest: {plan.devices} devices need more than the open-file "
            f"limit {limit} per process: use --processes",
            file=sys.stderr,
        )
        return EXIT_USAGE

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            report = runner.run(run_plan(plan, progress=progress))
    except PlanError as exc:
        print(f"companion loadtest: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        sys.stdout.write(
            orjson.dumps(
                {k: v for k, v in report.items() if k != "_stats"}, option=orjson.OPT_INDENT_2
            ).decode()
            + "\n"
        )
    else:
        print(render(report))
    return 0
