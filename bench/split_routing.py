"""Analyses per user per minute when a user's devices land on two nodes, against one node.

    python -m bench.split_routing                      # 20 users, 60 s per routing
    python -m bench.split_routing --users 50 --seconds 120

Two ``companion serve`` processes share a redis-server (broker and analysis leases) and
one SQLite file (the shared store; two processes on one machine). Each user has a watch
streaming ``stress`` and a ring streaming ``calm``, one frame a second each over REST,
after ten back-dated minutes of the same (so the rules have a window to judge). With
**one node** both devices post to node A; with **split** routing the ring posts to node B —
the case of issue 12 that gave 156 versions and 71 flips in 70 s when each node analysed
its own slice. A phone per user on node B counts the versions and flips it is pushed.
Analyses come from both nodes' ``companion_analyses`` counters, versions from
``companion_state_commits{cause="analysis"}``.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import tempfile
import time
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

import httpx
import orjson
import websockets
from websockets.exceptions import ConnectionClosed

from bench.harness import SECRET, ServerProcess, free_port, write_results
from brain.model import Frame
from brain.scenarios import generate
from server.auth import DeviceKind, issue
from server.protocol import frame_to_wire

MIN = 60_000
SEED_MINUTES = 10
METRIC = re.compile(r"^(companion_[a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$", re.MULTILINE)


def token(user: str, kind: str) -> str:
    return issue(SECRET, user, DeviceKind(kind), ttl_s=3600, now_s=int(time.time()))


def headers(user: str, kind: str = "watch") -> dict[str, str]:
    return {"Authorization": f"Bearer {token(user, kind)}"}


async def counters(http: httpx.AsyncClient, url: str) -> dict[str, float]:
    """analyses and analysis commits of one node."""
    text = (await http.get(url + "/metrics")).text
    found = {"analyses": 0.0, "versions": 0.0}
    for name, labels, value in METRIC.findall(text):
        if name == "companion_analyses_total":
            found["analyses"] += float(value)
        elif name == "companion_state_commits_total" and 'cause="analysis"' in labels:
            found["versions"] += float(value)
    return found


async def totals(http: httpx.AsyncClient, urls: list[str]) -> dict[str, float]:
    summed = {"analyses": 0.0, "versions": 0.0}
    for url in urls:
        for key, value in (await counters(http, url)).items():
            summed[key] += value
    return summed


def flips(states: list[str]) -> int:
    return sum(1 for i in range(2, len(states)) if states[i] == states[i - 2])


async def phone(url: str, user: str, states: list[str], stop: asyncio.Event) -> None:
    """A phone on ``url`` recording each state it is pushed (a change of ``state`` only)."""
    ws_url = url.replace("http", "ws") + "/v1/ws"
    async with websockets.connect(ws_url, additional_headers=headers(user, "phone")) as ws:
        await ws.send(orjson.dumps({"op": "hello", "client": "bench"}).decode())
        with suppress(ConnectionClosed):
            while not stop.is_set():
                try:
                    async with asyncio.timeout(0.5):
                        message = orjson.loads(await ws.recv())
                except TimeoutError:
                    continue
                state = message.get("state") or message.get("changes", {}).get("state")
                if state and (not states or states[-1] != state):
                    states.append(state)


async def stream(
    http: httpx.AsyncClient, url: str, user: str, frames: list[Frame], start: float
) -> None:
    """Post each frame when its time comes (``ts`` relative to the stream's ``start``)."""
    first = frames[0].ts
    for frame in frames:
        delay = start + (frame.ts - first) / 1000 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        answer = await http.post(
            f"{url}/v1/users/{user}/frames",
            json={"frames": [frame_to_wire(frame)]},
            headers=headers(user),
        )
        answer.raise_for_status()


async def phase(
    name: str, users: int, seconds: int, node_a: str, node_b: str, split: bool
) -> dict[str, Any]:
    """One routing for ``seconds``: the per-user figures."""
    names = [f"{name}-{i}" for i in range(users)]
    now = int(time.time() * 1000)
    begin = now - SEED_MINUTES * MIN
    minutes = SEED_MINUTES + seconds / 60
    series = {
        u: (
            generate("stress", start_ms=begin, minutes=minutes, device="watch", seed=i, every_s=1),
            generate(
                "calm", start_ms=begin, minutes=minutes, device="ring", seed=99 + i, every_s=1
            ),
        )
        for i, u in enumerate(names)
    }
    ring_url = node_b if split else node_a
    limits = httpx.Limits(max_connections=4 * users)
    async with httpx.AsyncClient(timeout=30, limits=limits) as http:
        for u, (watch, ring) in series.items():  # the back-dated history, in big batches
            for part, url in ((watch, node_a), (ring, ring_url)):
                old = [f for f in part if f.ts < now]
                for at in range(0, len(old), 300):
                    batch = [frame_to_wire(f) for f in old[at : at + 300]]
                    answer = await http.post(
                        f"{url}/v1/users/{u}/frames", json={"frames": batch}, headers=headers(u)
                    )
                    answer.raise_for_status()
        await asyncio.sleep(3)  # let the history's analyses finish before counting
        states: dict[str, list[str]] = {u: [] for u in names}
        stop = asyncio.Event()
        phones = [asyncio.create_task(phone(node_b, u, states[u], stop)) for u in names]
        before = await totals(http, [node_a, node_b])
        started = time.monotonic()
        live_end = now + seconds * 1000
        streams = []
        for u, (watch, ring) in series.items():
            for part, url in ((watch, node_a), (ring, ring_url)):
                live = [f for f in part if now <= f.ts < live_end]
                streams.append(stream(http, url, u, live, started))
        await asyncio.gather(*streams)
        elapsed = time.monotonic() - started
        await asyncio.sleep(2)  # the last debounce and analysis
        after = await totals(http, [node_a, node_b])
        stop.set()
        await asyncio.gather(*phones)
    per_minute = users * elapsed / 60
    return {
        "routing": "split (ring on node B)" if split else "one node",
        "users": users,
        "seconds": round(elapsed, 1),
        "analyses_per_user_per_minute": round(
            (after["analyses"] - before["analyses"]) / per_minute, 2
        ),
        "versions_per_user_per_minute": round(
            (after["versions"] - before["versions"]) / per_minute, 2
        ),
        "flips_per_user": round(sum(flips(s) for s in states.values()) / users, 2),
    }


def redis_server(stack: ExitStack) -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed")
    port = free_port()
    workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-redis-"))
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", workdir],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    stack.callback(process.wait, 10)
    stack.callback(process.terminate)
    time.sleep(0.5)  # bench only: redis-server listens within milliseconds
    return f"redis://127.0.0.1:{port}/0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=20, help="users per routing")
    parser.add_argument("--seconds", type=int, default=60, help="streaming time per routing")
    args = parser.parse_args()
    with ExitStack() as stack:
        data = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-split-")))
        env = {"COMPANION_BROKER": redis_server(stack), "COMPANION_DATA_DIR": str(data)}
        env |= {"COMPANION_RATE_PER_S": "1000", "COMPANION_RATE_BURST": "1000"}
        node_a = stack.enter_context(ServerProcess.companion(env))
        node_b = stack.enter_context(ServerProcess.companion(env))
        rows = [
            asyncio.run(phase("one", args.users, args.seconds, node_a.url, node_b.url, False)),
            asyncio.run(phase("split", args.users, args.seconds, node_a.url, node_b.url, True)),
        ]
    table = [
        "| routing | users | seconds | analyses / user / min | versions / user / min"
        " | flips / user |",
        "|---|---|---|---|---|---|",
    ] + [
        f"| {r['routing']} | {r['users']} | {r['seconds']} | {r['analyses_per_user_per_minute']}"
        f" | {r['versions_per_user_per_minute']} | {r['flips_per_user']} |"
        for r in rows
    ]
    path = write_results("split_routing", {"rows": rows}, "\n".join(table))
    print(path.read_text())


if __name__ == "__main__":
    main()
