"""A live subscriber's push latency, quiet and while the edge is attacked.

    python -m bench.edge_attack                                # 1,000 slowloris, 4 flooders
    python -m bench.edge_attack --slowloris 1000 --flooders 4 --changes 200 --rate 20
    python -m bench.edge_attack --no-compare                   # without the box-off phase

Starts ``companion serve`` (defaults: 10 s handshake timeout, rate limit 20/s burst 60,
the penalty box on) as a subprocess and subscribes one watch. Phase *quiet*: ``--changes``
state changes are committed through the demo route at ``--rate`` per second; each delta's
latency is taken from its commit time ``t`` to its arrival, and the server's CPU time is
sampled. Phase *attack*: the same, while ``--slowloris`` connections each send half a
request line and wait (reconnecting when the server closes them), and ``--flooders``
WebSockets each send a text fragment followed by empty continuation frames as fast as they
can (reconnecting at once when closed or refused: the worst case). Phase *attack, box off*:
the same attack on a second server with ``COMPANION_PENALTY_S=0``.

Everything runs on loopback, but from different addresses, as on the internet: the
subscriber (and the commits) from 127.0.0.1, flooder *i* from 127.0.0.(2+i), the slowloris
connections spread over the :data:`SLOWLORIS_ADDRESSES` addresses after those (Linux routes
all of 127.0.0.0/8 to the loopback interface), so the server's penalty box
(``COMPANION_PENALTY_*``) can tell them apart. The attackers run in a process of their
own. Writes ``bench/results/edge_attack.{json,md}``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys
import time
from typing import Any

import httpx
import orjson
import uvloop
import websockets
from websockets.frames import Frame, Opcode

from bench.harness import SECRET, ServerProcess, cpu_seconds, write_results
from clients.load.plan import Tokens
from clients.load.stats import fmt_ms, markdown_table

COUNTS = (
    "opened",
    "closed_by_server",
    "connect_errors",
    "frames",
    "flood_connections",
    "refused",
)
FLOOD_BURST = 2_000
"""Empty continuation frames a flooder writes per burst."""
SUBSCRIBER_ADDRESS = "127.0.0.1"
SLOWLORIS_ADDRESSES = 10
"""Source addresses the slowloris connections are spread over (a small botnet)."""
REFUSED = b"HTTP/1.1 503"


def attacker_address(index: int) -> str:
    """The loopback source address of attacker address number ``index`` (0: 127.0.0.2)."""
    return f"127.0.0.{2 + index}"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def subscriber(url: str, token: str, latencies: list[float], ready: asyncio.Event) -> None:
    async with websockets.connect(
        url,
        additional_headers={"Authorization": f"Bearer {token}"},
        local_addr=(SUBSCRIBER_ADDRESS, 0),
    ) as ws:
        await ws.send(orjson.dumps({"op": "hello", "client": "bench"}).decode())
        await ws.recv()
        ready.set()
        async for data in ws:
            message = orjson.loads(data)
            if message["op"] == "delta":
                latencies.append(time.time() * 1000 - message["t"])


async def commits(base: str, token: str, count: int, rate: float) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as http:
        start = time.perf_counter()
        for i in range(count):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            state = ("stressed", "calm")[i % 2]
            response = await http.post(
                "/v1/demo/users/live/state", json={"state": state, "force": True}
            )
            response.raise_for_status()


async def slowloris(
    host: str, port: int, source: str, stop: asyncio.Event, counts: dict[str, int]
) -> None:
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
        except OSError:
            counts["connect_errors"] += 1
            await asyncio.sleep(0.1)
            continue
        writer.write(b"GET /v1/ws HTTP/1.1\r\nHost: x\r\n")
        counts["opened"] += 1
        stopping = asyncio.ensure_future(stop.wait())
        closing = asyncio.ensure_future(reader.read())
        await asyncio.wait({stopping, closing}, return_when=asyncio.FIRST_COMPLETED)
        if closing.done():
            counts["closed_by_server"] += 1
            if not closing.cancelled() and closing.exception() is None:
                counts["refused"] += closing.result().startswith(REFUSED)
        stopping.cancel()
        closing.cancel()
        writer.close()


async def flooder(
    host: str, port: int, source: str, token: str, stop: asyncio.Event, counts: dict[str, int]
) -> None:
    burst = (
        Frame(Opcode.TEXT, b"", fin=False).serialize(mask=True, extensions=[])
        + Frame(Opcode.CONT, b"", fin=False).serialize(mask=True, extensions=[]) * FLOOD_BURST
    )
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
        except OSError:
            counts["connect_errors"] += 1
            await asyncio.sleep(0.1)
            continue
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                "GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"Authorization: Bearer {token}\r\n\r\n"
            ).encode()
        )
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            head = b""
        if not head.startswith(b"HTTP/1.1 101"):
            # Refused (the penalty box, admission): an attacker comes straight back.
            counts["refused"] += 1
            writer.close()
            await asyncio.sleep(0)
            continue
        closed = asyncio.ensure_future(reader.read())  # until the server ends the stream
        try:
            while not stop.is_set() and not closed.done():
                writer.write(burst)
                await writer.drain()
                counts["frames"] += FLOOD_BURST
                await asyncio.sleep(0)
        except (ConnectionError, OSError):
            pass
        counts["flood_connections"] += 1
        closed.cancel()
        writer.close()


async def phase(server: ServerProcess, args: argparse.Namespace, attack: bool) -> dict[str, Any]:
    tokens = Tokens(SECRET)
    host, port = "127.0.0.1", server.port
    latencies: list[float] = []
    ready = asyncio.Event()
    counts = dict.fromkeys(COUNTS, 0)
    ws_url = f"ws://{host}:{port}/v1/ws"
    live = asyncio.create_task(subscriber(ws_url, tokens.sign("live", "watch"), latencies, ready))
    await asyncio.wait_for(ready.wait(), 10)
    attackers: asyncio.subprocess.Process | None = None
    if attack:
        # In a process of their own: a flooder would otherwise hold up this loop and
        # with it the subscriber whose latency is measured.
        attackers = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.edge_attack",
            "--attack-port",
            str(port),
            "--slowloris",
            str(args.slowloris),
            "--flooders",
            str(args.flooders),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        await asyncio.sleep(2.0)  # let the attack build up
    cpu_before, wall_before = cpu_seconds(server.pid), time.perf_counter()
    await commits(server.url, tokens.sign("bench", "service"), args.changes, args.rate)
    await asyncio.sleep(0.5)  # the last deltas
    server_cores = (cpu_seconds(server.pid) - cpu_before) / (time.perf_counter() - wall_before)
    load = os.getloadavg()[0]
    if attackers is not None:
        assert attackers.stdin is not None
        attackers.stdin.close()  # the attackers stop at the end of their stdin
        out, _ = await attackers.communicate()
        counts.update(orjson.loads(out))
    live.cancel()
    return {
        "phase": "attack" if attack else "quiet",
        "deltas": len(latencies),
        "p50_ms": round(percentile(latencies, 0.50), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "max_ms": round(max(latencies, default=float("nan")), 2),
        "server_cores": round(server_cores, 2),
        "load": round(load, 2),
        **counts,
    }


async def attack_only(args: argparse.Namespace) -> None:
    """The attackers, until stdin ends; their counts as JSON on stdout."""
    tokens = Tokens(SECRET)
    host, port = "127.0.0.1", args.attack_port
    stop = asyncio.Event()
    counts = dict.fromkeys(COUNTS, 0)
    flooders = args.flooders
    tasks = [
        asyncio.create_task(
            slowloris(
                host, port, attacker_address(flooders + i % SLOWLORIS_ADDRESSES), stop, counts
            )
        )
        for i in range(args.slowloris)
    ]
    tasks += [
        asyncio.create_task(
            flooder(host, port, attacker_address(i), tokens.sign(f"f{i}", "phone"), stop, counts)
        )
        for i in range(flooders)
    ]
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    sys.stdout.write(orjson.dumps(counts).decode())


async def main(args: argparse.Namespace) -> None:
    if args.attack_port:
        await attack_only(args)
        return
    with ServerProcess.companion() as server:
        rows = [await phase(server, args, attack=False), await phase(server, args, attack=True)]
    if args.compare:
        # The same attack on a server without the penalty box, in the same run: on a shared
        # machine only figures taken minutes apart compare.
        with ServerProcess.companion(env={"COMPANION_PENALTY_S": "0"}) as server:
            rows.append({**await phase(server, args, attack=True), "phase": "attack, box off"})
    for row in rows:
        print(
            f"{row['phase']:>15}: {row['deltas']} deltas, p50 {fmt_ms(row['p50_ms'])} "
            f"p99 {fmt_ms(row['p99_ms'])} ms; server CPU {row['server_cores']} cores, load "
            f"{row['load']}; slowloris opened {row['opened']}, "
            f"closed by the server {row['closed_by_server']}; flood connections "
            f"{row['flood_connections']}, frames {row['frames']}; refused {row['refused']}"
        )
    columns = (
        ("phase", "phase"),
        ("deltas", "deltas"),
        ("p50_ms", "p50 ms"),
        ("p99_ms", "p99 ms"),
        ("max_ms", "max ms"),
        ("server_cores", "server CPU (cores)"),
        ("load", "load average (1 min)"),
        ("opened", "slowloris opened"),
        ("closed_by_server", "closed by server"),
        ("flood_connections", "flood connections"),
        ("frames", "flood frames written by the attackers"),
        ("refused", "refused (503)"),
    )
    table = markdown_table(
        [title for _, title in columns], [[row[k] for k, _ in columns] for row in rows]
    )
    path = write_results("edge_attack", {"args": vars(args), "rows": rows}, table + "\n")
    print(path)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slowloris", type=int, default=1000)
    parser.add_argument("--flooders", type=int, default=4)
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument(
        "--no-compare",
        dest="compare",
        action="store_false",
        help="skip the third phase (the attack on a server with COMPANION_PENALTY_S=0)",
    )
    parser.add_argument("--attack-port", type=int, default=0, help=argparse.SUPPRESS)
    uvloop.run(main(parser.parse_args()))
