"""What one attacking connection costs the server: CPU and memory, per kind of connection.

    python -m bench.edge_costs                 # 3,000 connections of each kind
    python -m bench.edge_costs --count 1000

Measures the server process's CPU time (``/proc/PID/stat``) around ``--count`` connections
of each kind, ``--concurrency`` at a time, every one from a loopback address of the
attackers (127.0.0.9 and up; Linux routes all of 127.0.0.0/8 to the loopback interface):

- *flood cycle*: what a fragment flooder cost each time it came back before the penalty
  box: the upgrade (token check included), a fragment flood, the server's close (a server
  with ``COMPANION_PENALTY_S=0``);
- *refusal*: the same connection from an address in the penalty box (a server with
  ``COMPANION_PENALTY_STRIKES=1``: one flood boxes the address for the whole run), held a
  second and answered 503, :data:`REFUSAL_CONCURRENCY` at a time;
- *slowloris*: a connection that sends half a request line and waits, held open (CPU to
  accept it, and resident memory per connection), then timed out by the server (408 and
  close, ``COMPANION_HANDSHAKE_TIMEOUT_S=3``; CPU per timeout).

Writes ``bench/results/edge_costs.{json,md}``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import time
from typing import Any

import uvloop
from websockets.frames import Frame, Opcode

from bench.harness import SECRET, ServerProcess, cpu_seconds, rss_kib, write_results
from clients.load.plan import Tokens
from clients.load.stats import markdown_table

FLOOD = (
    Frame(Opcode.TEXT, b"", fin=False).serialize(mask=True, extensions=[])
    + Frame(Opcode.CONT, b"", fin=False).serialize(mask=True, extensions=[]) * 100
)
"""A text message in more fragments than the server allows (its rate limit acts first)."""
HALF_REQUEST = b"GET /v1/ws HTTP/1.1\r\nHost: x\r\n"
HANDSHAKE_TIMEOUT_S = 3.0
ATTACKERS = 10
REFUSAL_CONCURRENCY = 500
UNMETERED = {"COMPANION_ADMIT_RATE": "100000", "COMPANION_ADMIT_BURST": "1000"}
"""Admission control off, in effect: every flood cycle is a whole handshake, none a cheap
503 of admission control."""
"""Loopback source addresses the connections of one kind are spread over."""


def source(index: int) -> tuple[str, int]:
    return (f"127.0.0.{9 + index % ATTACKERS}", 0)


def upgrade(token: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        "GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Authorization: Bearer {token}\r\n\r\n"
    ).encode()


async def flood_once(port: int, index: int, token: str) -> bytes:
    """One flooder connection: the status line of the answer to its upgrade."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=source(index))
    try:
        writer.write(upgrade(token))
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return b"reset"
        if head.startswith(b"HTTP/1.1 101"):
            writer.write(FLOOD)
            await reader.read(100)  # the server's close frame
        return head.split(b"\r\n", 1)[0]
    finally:
        writer.close()


async def bounded(count: int, concurrency: int, work: Any) -> dict[str, int]:
    """Run ``work(i)`` for ``i`` in ``range(count)``, ``concurrency`` at a time; the answers
    counted by value."""
    gate = asyncio.Semaphore(concurrency)
    answers: dict[str, int] = {}

    async def one(i: int) -> None:
        async with gate:
            answer = (await work(i)).decode("latin-1")
            answers[answer] = answers.get(answer, 0) + 1

    await asyncio.gather(*(one(i) for i in range(count)))
    return answers


def row(
    kind: str, server: ServerProcess, cpu_before: float, count: int, **extra: Any
) -> dict[str, Any]:
    cpu_us = (cpu_seconds(server.pid) - cpu_before) / count * 1e6
    return {"kind": kind, "count": count, "cpu_us": round(cpu_us, 1), **extra}


async def flood_cycles(args: argparse.Namespace, token: str) -> dict[str, Any]:
    with ServerProcess.companion(env={"COMPANION_PENALTY_S": "0", **UNMETERED}) as server:
        await flood_once(server.port, 0, token)  # warm up
        cpu = cpu_seconds(server.pid)
        answers = await bounded(
            args.count, args.concurrency, lambda i: flood_once(server.port, i, token)
        )
        return row("flood cycle (box off)", server, cpu, args.count, answers=answers)


async def refusals(args: argparse.Namespace, token: str) -> dict[str, Any]:
    env = {
        "COMPANION_PENALTY_STRIKES": "1",
        "COMPANION_PENALTY_S": "120",
        "COMPANION_PENALTY_MAX_S": "120",
        **UNMETERED,
    }
    with ServerProcess.companion(env=env) as server:
        for i in range(ATTACKERS):  # one flood from each address boxes it
            await flood_once(server.port, i, token)
        cpu = cpu_seconds(server.pid)
        # Each refusal is held a second before its answer: many at a time, as attackers
        # that come straight back are (within the server's MAX_HOLDING).
        answers = await bounded(
            args.count, REFUSAL_CONCURRENCY, lambda i: flood_once(server.port, i, token)
        )
        return row("refusal (box on)", server, cpu, args.count, answers=answers)


async def slowloris(args: argparse.Namespace) -> list[dict[str, Any]]:
    env = {"COMPANION_HANDSHAKE_TIMEOUT_S": str(HANDSHAKE_TIMEOUT_S)}
    with ServerProcess.companion(env=env) as server:
        rss, cpu = rss_kib(server.pid), cpu_seconds(server.pid)
        held = []
        for i in range(args.count):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", server.port, local_addr=source(i)
            )
            writer.write(HALF_REQUEST)
            held.append((reader, writer))
        await asyncio.sleep(0.5)  # the last ones accepted
        kib = (rss_kib(server.pid) - rss) / args.count
        opened = row("slowloris held open", server, cpu, args.count, rss_kib=round(kib, 2))
        cpu = cpu_seconds(server.pid)
        started = time.perf_counter()
        answers_list = await asyncio.gather(*(reader.read() for reader, _ in held))
        waited = time.perf_counter() - started
        for _, writer in held:
            writer.close()
        answers: dict[str, int] = {}
        for answer in answers_list:
            line = answer.split(b"\r\n", 1)[0].decode("latin-1") or "closed"
            answers[line] = answers.get(line, 0) + 1
        timed_out = row(
            "slowloris timed out (408)",
            server,
            cpu,
            args.count,
            answers=answers,
            waited_s=round(waited, 1),
        )
        return [opened, timed_out]


async def main(args: argparse.Namespace) -> None:
    token = Tokens(SECRET).sign("flooder", "phone")
    rows = [await flood_cycles(args, token), await refusals(args, token)]
    rows += await slowloris(args)
    rows = [{**r, "load": round(os.getloadavg()[0], 2)} for r in rows]
    for r in rows:
        print(r)
    table = markdown_table(
        ["connection", "count", "server CPU µs each", "RSS KiB each", "answers", "load (1 min)"],
        [
            [
                r["kind"],
                r["count"],
                r["cpu_us"],
                r.get("rss_kib", ""),
                r.get("answers", ""),
                r["load"],
            ]
            for r in rows
        ],
    )
    print(write_results("edge_costs", {"args": vars(args), "rows": rows}, table + "\n"))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=20)
    uvloop.run(main(parser.parse_args()))
