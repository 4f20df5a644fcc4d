"""Polling vs push over a simulated day: requests, bytes and change-to-watch latency.

    python -m bench.polling                  # 25 watches per mode, 1/10 of a day at 100x

Four groups of watches run side by side against one ``companion serve``, each watch with
its own user: ``legacy`` polls ``GET /avatar/current-state/{id}`` every 30 s (what watches
in the field do), ``poll`` polls ``GET /v1/users/{id}/state`` every 30 s with
``If-None-Match`` (304 when unchanged), ``longpoll`` holds ``?wait=25`` with
``If-None-Match``, and ``ws`` holds a WebSocket (``hello``, then deltas).

Time is compressed: every interval (30 s polls, 25 s long-polls) is divided by
``--speedup`` and the run replays ``--day-fraction`` of a day, so 0.1 of a day at 100x runs
86.4 s. Each user's state changes at random (Poisson) times, ``--changes-per-day`` on
average. Counts scale back to one watch for one day by ``1 / day_fraction / watches``.
Latencies: a poller's wait for its next poll was compressed, so ``legacy`` and ``poll``
latencies are multiplied by the speed-up (the request's own round trip, ~1 ms, is thereby
over-counted, which is negligible against seconds); long-poll and WebSocket latencies are
real server and network time and are reported as measured. Bytes are HTTP/1.1 bytes
(request and status lines, headers, bodies; WebSocket frames with their headers) without
TCP/IP or TLS; the WebSocket's keepalive (one ping and pong every 45 s) and one connection
handshake per day are added by calculation, as the compressed run cannot show them.
Writes ``bench/results/polling.{json,md}``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import random
from typing import Any

import uvloop

from bench.harness import SECRET, ServerProcess, write_results
from clients.load.devices import Fleet
from clients.load.driver import StateDriver
from clients.load.plan import LoadPlan, Tokens
from clients.load.stats import RunStats, fmt_ms, markdown_table

DAY_S = 86_400
POLL_S = 30.0
LONGPOLL_S = 25.0
PING_S = 45.0
WS_PING_BYTES = 6 + 10  # server ping (2 + 4 payload), client pong (2 + 4 mask + 4 payload)
WS_HANDSHAKE_BYTES = 2 * 280 + 45 + 420  # upgrade request + response, hello, snapshot
MODES = ("legacy", "poll", "longpoll", "ws")


def schedule(
    users: list[str], per_day: float, window_s: float, speedup: float, rng: random.Random
) -> list[tuple[float, str]]:
    """Poisson change times (compressed seconds from start) for every user."""
    events = []
    rate = per_day / DAY_S * speedup  # changes per compressed second
    for user in users:
        t = rng.expovariate(rate)
        while t < window_s:
            events.append((t, user))
            t += rng.expovariate(rate)
    return events


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    window_s = DAY_S * args.day_fraction / args.speedup
    rng = random.Random(args.seed)
    with ServerProcess.companion() as server:
        base = LoadPlan(
            server=server.url,
            secret=SECRET,
            watches=args.watches,
            poll_interval=POLL_S / args.speedup,
            longpoll_wait=LONGPOLL_S / args.speedup,
            ramp=1000,
            duration=window_s,
        )
        fleets: dict[str, Fleet] = {}
        all_users: list[str] = []
        tokens: dict[tuple[str, str], str] = {}
        driver_stats = RunStats()
        for mode in MODES:
            plan = dataclasses.replace(base, watch_mode=mode, prefix=f"day-{mode}-")
            tokens.update(await Tokens(SECRET).all_for(plan))
            all_users += [plan.user_of(i) for i in range(plan.watches)]
            fleets[mode] = Fleet(plan, tokens, range(plan.watches))
        service = Tokens(SECRET).sign("bench", "service")
        driver = StateDriver(server.url, service, all_users, 1.0, driver_stats)
        for fleet in fleets.values():
            fleet.commit_times = driver.commit_times
        await asyncio.gather(*(f.ramp(1000) for f in fleets.values()))
        for fleet in fleets.values():  # count the day only, not the connection set-up
            fleet.stats.reset()
        events = schedule(all_users, args.changes_per_day, window_s, args.speedup, rng)
        await driver.run_schedule(events)
        await asyncio.sleep(POLL_S / args.speedup * 1.5)  # let the last polls see the last change
        await asyncio.gather(*(f.stop() for f in fleets.values()))
    changes_per_mode = {m: sum(1 for _, u in events if u.startswith(f"day-{m}-")) for m in MODES}
    per_watch_day = 1 / args.day_fraction / args.watches
    rows = {}
    for mode, fleet in fleets.items():
        c, latency = fleet.stats.counters, fleet.stats.histograms
        seen = c["versions_pushed"] if mode == "ws" else c["polls_changed"]
        hist = latency["push"] if mode == "ws" else latency["poll"]
        scale = args.speedup if mode in ("legacy", "poll") else 1.0
        requests = c["requests"] * per_watch_day
        down = c["bytes_in"] * per_watch_day
        up = c["bytes_out"] * per_watch_day
        if mode == "ws":
            down += DAY_S / PING_S * 6 + WS_HANDSHAKE_BYTES / 2
            up += DAY_S / PING_S * 10 + WS_HANDSHAKE_BYTES / 2
        rows[mode] = {
            "changes": changes_per_mode[mode],
            "changes_seen": seen,
            "requests_per_watch_day": round(requests),
            "bytes_down_per_watch_day": round(down),
            "bytes_up_per_watch_day": round(up),
            "latency_ms": {
                k: (v * scale if k not in ("count",) else v) for k, v in hist.summary().items()
            },
            "errors": dict(fleet.stats.errors),
        }
    return {
        "watches_per_mode": args.watches,
        "speedup": args.speedup,
        "day_fraction": args.day_fraction,
        "changes_per_day": args.changes_per_day,
        "window_s": round(window_s, 1),
        "changes_committed": driver_stats.counters["changes"],
        "change_errors": dict(driver_stats.errors),
        "modes": rows,
    }


def render(result: dict[str, Any]) -> str:
    names = {
        "legacy": "legacy poll, 30 s",
        "poll": "ETag poll, 30 s",
        "longpoll": "long-poll, 25 s",
        "ws": "WebSocket push",
    }
    table = []
    for mode in MODES:
        r = result["modes"][mode]
        lat = r["latency_ms"]
        table.append(
            [
                names[mode],
                f"{r['requests_per_watch_day']:,}",
                f"{(r['bytes_down_per_watch_day'] + r['bytes_up_per_watch_day']) / 1024:,.0f}",
                f"{r['changes_seen']}/{r['changes']}",
                fmt_ms(lat["p50"]),
                fmt_ms(lat["p99"]),
            ]
        )
    headers = [
        "mode",
        "requests/watch/day",
        "KiB/watch/day",
        "changes seen",
        "latency p50 ms",
        "latency p99 ms",
    ]
    return (
        f"## Polling vs push, one simulated day ({result['changes_per_day']:g} changes/day)\n\n"
        f"{result['watches_per_mode']} watches per mode; {result['day_fraction']:g} of a day "
        f"replayed at {result['speedup']:g}x ({result['window_s']:g} s); counts scaled to one "
        f"watch for one day. Latency = state commit → the watch has the new state.\n\n"
        + markdown_table(headers, table)
        + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--watches", type=int, default=25, help="watches per mode")
    parser.add_argument("--speedup", type=float, default=100.0)
    parser.add_argument("--day-fraction", type=float, default=0.1)
    parser.add_argument("--changes-per-day", type=float, default=40.0)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(measure(args))
    markdown = render(result)
    print(markdown)
    print(write_results("polling", result, markdown))


if __name__ == "__main__":
    main()
