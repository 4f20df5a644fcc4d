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

    python -m bench.polling --day            # wake-ups and bytes per watch per day, computed

``--day`` runs nothing live: it takes the scripted day of :func:`bench.avatar_day.script_day`
(one watch's user changes situation every 20-60 minutes from 07:00 to 23:00; each new state
or mood is followed by the avatar saga's ``generating`` and, ``--generation-s`` later, its
``image_url``; a situation seen before that day is a cache hit) and delivers it to a watch
in each mode on a simulated clock: push in normal mode, push in saver mode at each
``--saver-intervals`` (through the server's own :class:`~server.push.policy.Pacer` and
coalescing :class:`~server.push.outbox.Outbox`, so what is held and merged is what the server
would hold and merge), long-poll (25 s holds) and 30 s ETag polling. A wake-up is one
message the watch must receive (a push, or a poll's answer); bytes are the WebSocket frames
of the encoded deltas, and for polling the per-request bytes this benchmark measured live
(:data:`POLL_BYTES`). Keepalive pings of a socket the watch holds itself are reported apart:
behind a phone bridge they end at the phone. Bounded: a day of ``--watches`` users takes
well under a second.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import random
from typing import Any

import uvloop

from bench.avatar_day import script_day
from bench.harness import SECRET, ServerProcess, write_results
from clients.load.devices import Fleet
from clients.load.driver import StateDriver
from clients.load.plan import LoadPlan, Tokens
from clients.load.stats import RunStats, fmt_ms, markdown_table
from server.protocol import DeliveryPolicy, Delta, Power, text_frame
from server.push.outbox import Outbox
from server.push.policy import Pacer

DAY_S = 86_400
POLL_S = 30.0
LONGPOLL_S = 25.0
PING_S = 45.0
WS_PING_BYTES = 6 + 10  # server ping (2 + 4 payload), client pong (2 + 4 mask + 4 payload)
WS_HANDSHAKE_BYTES = 2 * 280 + 45 + 420  # upgrade request + response, hello, snapshot
MODES = ("legacy", "poll", "longpoll", "ws")
POLL_BYTES = {"poll": 541, "longpoll": 560}
"""HTTP bytes (request and answer) per ETag poll and per long-poll, from the live run of this
benchmark (``bench/results/polling.md``: KiB/watch/day over requests/watch/day)."""
CHANGED_EXTRA_BYTES = 380
"""What a poll that finds a change adds to a 304: the state body (a snapshot's size)."""
KEEPALIVE_PER_DAY = DAY_S / PING_S


def day_deltas(
    user: str, changes: list[tuple[int, tuple[str, str, int]]], generation_s: float
) -> list[Delta]:
    """The deltas one user's scripted day pushes: each change, and the avatar saga after a
    new state or mood (``generating`` then the image on a cache miss, the image on a hit)."""
    deltas: list[Delta] = []
    seen: set[tuple[str, str]] = set()
    previous: tuple[str, str] | None = None
    version = 1

    def push(t: float, **changes: object) -> None:
        nonlocal version
        version += 1
        deltas.append(Delta(user, version, version - 1, f"{version:016x}", changes, t * 1000))

    for minute, (state, mood, energy) in changes:
        t = minute * 60.0
        reasoning = f"{state}: heart rate and movement over the last 15 minutes"
        push(t, state=state, mood=mood, energy=energy, reasoning=reasoning, actions=[])
        if (state, mood) == previous:
            continue
        previous = (state, mood)
        image = f"http://127.0.0.1:8000/media/{state}-{mood}-{version:04d}.png"
        if (state, mood) in seen:
            push(t + 0.05, image_url=image, avatar_status="ready")
        else:
            seen.add((state, mood))
            push(t + 0.05, avatar_status="generating")
            push(t + generation_s, image_url=image, avatar_status="ready")
    return sorted(deltas, key=lambda d: d.t)


def deliver(deltas: list[Delta], policy: DeliveryPolicy) -> tuple[int, int]:
    """(wake-ups, bytes) of ``deltas`` to one device under ``policy``, the way
    :meth:`server.push.delivery.Delivery.offer_delta` paces them (simulated clock)."""
    pacer = Pacer(policy)
    held = Outbox(64)
    due: float | None = None
    wakes = sent = 0

    def release(now: float) -> None:
        nonlocal wakes, sent, due
        pacer.woke(now)
        wakes += 1
        while (item := held.pop()) is not None:
            sent += len(text_frame(item[0].encode()))
        due = None

    for delta in deltas:
        now = delta.t / 1000
        if due is not None and due <= now:
            release(due)
        until = pacer.hold_until(delta, now)
        held.put_delta(delta, delta.encode())
        if until is None:
            release(now)
        elif due is None:
            due = until
    if due is not None:
        release(due)
    return wakes, sent


def computed_day(args: argparse.Namespace) -> dict[str, Any]:
    """Wake-ups and bytes per watch per day in every mode, from the scripted day."""
    by_user: dict[str, list[tuple[int, tuple[str, str, int]]]] = {}
    for minute, user, situation in script_day(args.watches, args.seed):
        by_user.setdefault(user, []).append((minute, situation))
    policies = {"push normal": DeliveryPolicy()}
    for interval in args.saver_intervals:
        policies[f"push saver {interval:g} s"] = DeliveryPolicy(Power.SAVER, interval)
    totals: dict[str, list[float]] = {name: [0, 0] for name in policies}
    changes = deltas_total = 0
    for user, situations in by_user.items():
        deltas = day_deltas(user, situations, args.generation_s)
        changes += len(situations)
        deltas_total += len(deltas)
        for name, policy in policies.items():
            wakes, sent = deliver(deltas, policy)
            totals[name][0] += wakes
            totals[name][1] += sent
    users = len(by_user)
    per_day = changes / users
    rows: dict[str, dict[str, float]] = {
        name: {"wakeups": w / users, "bytes": b / users} for name, (w, b) in totals.items()
    }
    seen = deltas_total / users  # each state a poller sees once costs it a body
    rows["long-poll 25 s"] = {
        "wakeups": DAY_S / LONGPOLL_S + per_day,
        "bytes": (DAY_S / LONGPOLL_S + per_day) * POLL_BYTES["longpoll"]
        + seen * CHANGED_EXTRA_BYTES,
    }
    rows["ETag poll 30 s"] = {
        "wakeups": DAY_S / POLL_S,
        "bytes": DAY_S / POLL_S * POLL_BYTES["poll"] + per_day * CHANGED_EXTRA_BYTES,
    }
    return {
        "watches": users,
        "changes_per_watch_day": round(per_day, 1),
        "deltas_per_watch_day": round(deltas_total / users, 1),
        "generation_s": args.generation_s,
        "keepalive_per_day": KEEPALIVE_PER_DAY,
        "keepalive_bytes_per_day": KEEPALIVE_PER_DAY * WS_PING_BYTES,
        "modes": {k: {m: round(v, 1) for m, v in r.items()} for k, r in rows.items()},
    }


def render_day(result: dict[str, Any]) -> str:
    table = [
        [name, f"{r['wakeups']:,.1f}", f"{r['bytes'] / 1024:,.1f}"]
        for name, r in result["modes"].items()
    ]
    return (
        f"## Wake-ups and bytes per watch per day, computed from the scripted day\n\n"
        f"{result['watches']} watches, {result['changes_per_watch_day']:g} situation changes "
        f"and {result['deltas_per_watch_day']:g} deltas per watch per day (avatar generation "
        f"{result['generation_s']:g} s). A wake-up is one message the watch receives. A watch "
        f"that holds its own socket also gets {result['keepalive_per_day']:,.0f} keepalive "
        f"pings a day ({result['keepalive_bytes_per_day'] / 1024:,.0f} KiB) in every push "
        f"mode; behind a phone bridge they end at the phone.\n\n"
        + markdown_table(["mode", "wake-ups/watch/day", "KiB/watch/day"], table)
        + "\n"
    )


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
    parser.add_argument("--day", action="store_true", help="compute the scripted day instead")
    parser.add_argument("--generation-s", type=float, default=8.0, help="avatar generation (s)")
    parser.add_argument("--saver-intervals", type=float, nargs="+", default=[300.0, 1800.0, 3600.0])
    args = parser.parse_args()
    if args.day:
        day = computed_day(args)
        text = render_day(day)
        print(text)
        print(write_results("polling-day", day, text))
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(measure(args))
    markdown = render(result)
    print(markdown)
    print(write_results("polling", result, markdown))


if __name__ == "__main__":
    main()
