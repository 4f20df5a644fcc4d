"""Nodes as one: cross-node push latency, and convergence after three kinds of failure.

    python -m bench.cluster                                  # 10,000 devices, 4 workers
    python -m bench.cluster --devices 2000 --processes 2     # a shared machine
    python -m bench.cluster --nodes 2 --push-only            # the push phase on two nodes

``--nodes`` (3 by default, at least 2) ``companion serve`` nodes share a private
redis-server and a private DynamoDB Local (the cluster suite's machinery:
``tests/cluster/nodes.py``, ``tests/services.py``), all on loopback. Each user has two
WebSocket devices on two different nodes (``--devices`` in all), held by ``--processes``
worker processes (:mod:`tests.cluster.devices`: lean sockets, no task per device). Every
commit goes through node 0 (``POST /v1/demo/users/{id}/state``), so devices on the other
nodes are pushed across the broker.

1. **Push**: after ``--warmup`` unmeasured commits of users with no device (DynamoDB
   Local is a JVM: its first writes are slow), ``--commits`` commits over distinct users at
   ``--rate`` a second; each delta's latency is arrival minus the server's commit time
   ``t`` (one clock), p50/p99 by whether the device is on the committing node, beside the
   commits' POST round trips.
2. **Node SIGKILL**: the last node is killed; its devices reconnect to the others, and
   ``--fault-commits`` users get a new version at once through node 0.
3. **Redis restart**: Redis stops, the same users get a new version (the broker cannot
   carry it), Redis starts again on its port.
4. **DynamoDB pause**: DynamoDB Local is paused (SIGSTOP) for ``--outage`` seconds while the
   same users' commits go in (they wait), then resumed.

For each failure: the seconds from the failure's end (the kill; Redis answering again; the
resume) until every device holds its user's version committed during it, and until every
dropped device was back. ``--push-only`` stops after the push phase. A markdown table is
printed and written to ``bench/results/cluster.md`` (``--output`` names another file).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
import uvloop
from prometheus_client.parser import text_string_to_metric_families

from bench.harness import write_results
from brain.backoff import Backoff
from clients.load.loadtest import raise_fd_limit
from tests.cluster.devices import Device, Fleet
from tests.cluster.nodes import Cluster, running_cluster
from tests.conftest import token
from tests.services import FAKE_AWS_ENV, DynamoDBProcess, RedisProcess, free_port

COMMIT_NODE = 0
CONVERGE_LIMIT_S = 120.0
"""How long the bench waits for convergence before it reports a failure to converge."""

COMMIT_RETRY = Backoff(attempts=5, base=0.05, cap=1.0)
"""A commit whose connection dropped is sent again (``force``: at worst one more version)."""

Share = list[tuple[str, str, int]]
"""A worker's devices: (user, kind, node index)."""


# -- the worker processes ----------------------------------------------------------------


def worker(share: Share, urls: list[str], pipe: Connection) -> None:
    """Hold ``share``'s devices and answer the parent's questions on ``pipe`` until stop."""
    raise_fd_limit()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve_parent(share, urls, pipe))


async def _serve_parent(share: Share, urls: list[str], pipe: Connection) -> None:
    devices = [Device(user, kind, token(user, kind), urls, home=node) for user, kind, node in share]
    first_home = {id(d): d.home for d in devices}
    fleet = Fleet(devices)
    pipe.send(("connected", await fleet.connect()))
    while True:
        command, argument = await asyncio.to_thread(pipe.recv)
        if command == "latencies":
            same = [s for d in devices if first_home[id(d)] == COMMIT_NODE for s in d.latencies]
            cross = [s for d in devices if first_home[id(d)] != COMMIT_NODE for s in d.latencies]
            pipe.send((same, cross))
        elif command == "reached":
            pipe.send(await _reached(fleet, argument))
        elif command == "stop":
            await fleet.close()
            pipe.send("stopped")
            return


async def _reached(fleet: Fleet, latest: dict[str, int]) -> tuple[float | None, float, int]:
    """When every device held ``latest`` (``None``: not within the limit), when the last
    dropped device was back, and how many devices are still behind."""
    when: float | None = None
    try:
        async with asyncio.timeout(CONVERGE_LIMIT_S):
            while (when := fleet.reached(latest)) is None:  # noqa: ASYNC110
                await asyncio.sleep(0.05)  # a poll interval under the deadline above
    except TimeoutError:
        when = None
    back = max((d.back_at for d in fleet.devices), default=0.0)
    return when, back, len(fleet.behind(latest))


class Workers:
    """The worker processes and their pipes."""

    def __init__(self, shares: Sequence[Share], urls: list[str]) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.processes = []
        for share in shares:
            ours, theirs = context.Pipe()
            process = context.Process(target=worker, args=(share, urls, theirs), daemon=True)
            process.start()
            self.pipes.append(ours)
            self.processes.append(process)

    async def ask(self, command: str, argument: Any = None) -> list[Any]:
        for pipe in self.pipes:
            pipe.send((command, argument))
        return [await asyncio.to_thread(pipe.recv) for pipe in self.pipes]

    async def connected(self) -> float:
        """Wait until every worker connected its devices; the slowest one's seconds."""
        answers = await asyncio.gather(*(asyncio.to_thread(p.recv) for p in self.pipes))
        return max(float(answer[1]) for answer in answers)

    async def stop(self) -> None:
        await self.ask("stop")
        for process in self.processes:
            process.join(10)


# -- the parent --------------------------------------------------------------------------


async def commit(http: httpx.AsyncClient, user: str, mark: int) -> int:
    """Commit a new version of ``user`` through the commit node (a new ``reasoning``: a
    visible change that starts no avatar saga, so no image is drawn on the way); its
    version. A dropped
    connection (a keep-alive the node closed as it was reused) is retried under
    :data:`COMMIT_RETRY`; raises the last error when the retries are spent."""
    retry = 0
    while True:
        try:
            answer = await http.post(
                f"/v1/demo/users/{user}/state",
                json={"reasoning": f"bench commit {mark}", "force": True},
                headers={"Authorization": f"Bearer {token(user, 'service')}"},
                timeout=60,
            )
        except httpx.TransportError:
            if not COMMIT_RETRY.may_retry(retry):
                raise
            await COMMIT_RETRY.wait(retry)
            retry += 1
            continue
        answer.raise_for_status()
        return int(answer.json()["version"])


async def commit_paced(
    http: httpx.AsyncClient,
    users: Sequence[str],
    mark: int,
    rate: float | None,
    round_trips: list[float] | None = None,
) -> dict[str, int]:
    """One commit per user, ``rate`` a second (``None``: all at once, 64 in flight); each
    POST's round trip (seconds) is appended to ``round_trips`` when given."""
    gate = asyncio.Semaphore(64)
    started = time.monotonic()

    async def one(index: int, user: str) -> tuple[str, int]:
        if rate:
            await asyncio.sleep(max(0.0, started + index / rate - time.monotonic()))
        async with gate:
            sent = time.monotonic()
            version = await commit(http, user, mark)
            if round_trips is not None:
                round_trips.append(time.monotonic() - sent)
            return user, version

    return dict(await asyncio.gather(*(one(i, u) for i, u in enumerate(users))))


async def store_write_p99_ms(http: httpx.AsyncClient) -> float | None:
    """The commit node's ``put_state`` p99 from ``companion_store_seconds`` (the upper bound
    of the histogram bucket it falls in, ms); ``None`` when it made no store write."""
    text = (await http.get("/metrics")).text
    buckets: list[tuple[float, float]] = []
    for family in text_string_to_metric_families(text):
        if family.name != "companion_store_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket") and sample.labels.get("operation") == "put_state":
                buckets.append((float(sample.labels["le"]), sample.value))
    buckets.sort()
    if not buckets or buckets[-1][1] == 0:
        return None
    total = buckets[-1][1]
    bound = next(le for le, count in buckets if count >= 0.99 * total)
    return round(bound * 1000, 1)


def say(line: str) -> None:
    """A progress line on stderr, with the load average (the machine is shared)."""
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"[{time.strftime('%H:%M:%S')} load {load}] {line}", file=sys.stderr, flush=True)


def percentile(samples: list[float], q: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def converge(
    workers: Workers, latest: dict[str, int], since: float, committed: float
) -> dict[str, Any]:
    """Seconds from ``since`` (epoch) until the last commit answered (at ``committed``),
    until every device held ``latest``, and until the last dropped device was back."""
    answers = await workers.ask("reached", latest)
    behind = sum(a[2] for a in answers)
    whens = [a[0] for a in answers]
    converged = None if behind or None in whens else max(0.0, max(whens) - since)
    backs = [a[1] for a in answers if a[1] > since]
    return {
        "committed_s": round(max(0.0, committed - since), 2),
        "converged_s": None if converged is None else round(converged, 2),
        "devices_behind": behind,
        "reconnected_s": round(max(backs) - since, 2) if backs else None,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    os.environ.update(FAKE_AWS_ENV)
    users = [f"bench-{i}" for i in range(args.devices // 2)]
    fault_users = users[: args.fault_commits]
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        workdir = Path(tmp)
        (workdir / "redis").mkdir()
        (workdir / "dynamodb").mkdir()
        redis = RedisProcess(free_port(), workdir / "redis")
        dynamodb = DynamoDBProcess(free_port(), workdir / "dynamodb")
        await asyncio.gather(redis.start(), dynamodb.start())
        try:
            settings = {"COMPANION_ADMIT_RATE": str(args.admit_rate)}
            async with running_cluster(
                workdir,
                broker=redis.url,
                dynamodb=dynamodb.endpoint,
                nodes=args.nodes,
                settings=settings,
            ) as cluster:
                return await measure(args, cluster, redis, dynamodb, users, fault_users)
        finally:
            await asyncio.gather(redis.stop(), dynamodb.stop())


async def measure(
    args: argparse.Namespace,
    cluster: Cluster,
    redis: RedisProcess,
    dynamodb: DynamoDBProcess,
    users: list[str],
    fault_users: list[str],
) -> dict[str, Any]:
    urls = [node.ws_url for node in cluster.nodes]
    devices: Share = []
    for i, user in enumerate(users):  # a user's two devices on two different nodes
        devices += [(user, "phone", i % args.nodes), (user, "watch", (i + 1) % args.nodes)]
    shares = [devices[k :: args.processes] for k in range(args.processes)]
    workers = Workers(shares, urls)
    result: dict[str, Any] = {"devices": len(devices), "users": len(users)}
    try:
        result["connect_s"] = round(await workers.connected(), 2)
        say(f"{len(devices):,} devices connected in {result['connect_s']} s")
        async with httpx.AsyncClient(
            base_url=cluster.nodes[COMMIT_NODE].url, limits=httpx.Limits(max_connections=64)
        ) as http:
            if args.warmup:
                # DynamoDB Local is a JVM: its first writes run cold. Users with no device
                # take them, so no measured delta waits behind the JIT.
                warm = [f"warm-{i}" for i in range(args.warmup)]
                await commit_paced(http, warm, 1, args.rate)
                say(f"{args.warmup:,} warm-up commits done")
            pushed = users[: args.commits]
            round_trips: list[float] = []
            latest = await commit_paced(http, pushed, 10, args.rate, round_trips)
            now = time.time()
            result["push_converged"] = await converge(workers, latest, now, now)
            answers = await workers.ask("latencies")
            same = [s for a in answers for s in a[0]]
            cross = [s for a in answers for s in a[1]]
            result["push"] = {
                "commits": len(pushed),
                "rate": args.rate,
                "same_node_p50_ms": round(percentile(same, 0.5) * 1000, 1),
                "same_node_p99_ms": round(percentile(same, 0.99) * 1000, 1),
                "cross_node_p50_ms": round(percentile(cross, 0.5) * 1000, 1),
                "cross_node_p99_ms": round(percentile(cross, 0.99) * 1000, 1),
                "cross_node_max_ms": round(max(cross, default=0.0) * 1000, 1),
                "samples": len(same) + len(cross),
                "commit_round_trip_p50_ms": round(percentile(round_trips, 0.5) * 1000, 1),
                "commit_round_trip_p99_ms": round(percentile(round_trips, 0.99) * 1000, 1),
                "put_state_p99_ms_at_most": await store_write_p99_ms(http),
            }

            say(f"push: cross-node p99 {result['push']['cross_node_p99_ms']} ms")
            if args.push_only:
                return result
            killed_at = time.time()
            await cluster.kill(cluster.nodes[-1])
            latest = await commit_paced(http, fault_users, 20, None)
            result["sigkill"] = await converge(workers, latest, killed_at, time.time())

            say(f"SIGKILL: {result['sigkill']}")
            await redis.stop()
            committing = asyncio.create_task(commit_paced(http, fault_users, 30, None))
            await asyncio.sleep(args.outage)  # the outage itself: the bench holds Redis down
            await redis.start()
            back_at = time.time()
            latest = await committing
            result["redis_restart"] = await converge(workers, latest, back_at, time.time())

            say(f"Redis restart: {result['redis_restart']}")
            dynamodb.pause()
            try:
                committing = asyncio.create_task(commit_paced(http, fault_users, 40, None))
                await asyncio.sleep(args.outage)  # the outage itself: DynamoDB hangs this long
            finally:
                dynamodb.resume()
            resumed_at = time.time()
            latest = await committing
            result["dynamodb_pause"] = await converge(workers, latest, resumed_at, time.time())
    finally:
        await workers.stop()
    return result


def table(result: dict[str, Any], args: argparse.Namespace) -> str:
    push = result["push"]
    lines = [
        f"{result['devices']:,} WebSocket devices ({result['users']:,} users, two devices each "
        f"on two of {args.nodes} nodes) over {args.processes} worker processes; all connected in "
        f"{result['connect_s']} s. Commits through node {COMMIT_NODE}.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| push, same node: p50 / p99 | {push['same_node_p50_ms']} / "
        f"{push['same_node_p99_ms']} ms |",
        f"| push, cross node: p50 / p99 / max | {push['cross_node_p50_ms']} / "
        f"{push['cross_node_p99_ms']} / {push['cross_node_max_ms']} ms |",
        f"| ({push['commits']:,} commits at {push['rate']:g}/s; {push['samples']:,} deltas) | |",
        f"| the commit's POST round trip (read, conditional write, publish): p50 / p99 | "
        f"{push['commit_round_trip_p50_ms']} / {push['commit_round_trip_p99_ms']} ms |",
        f"| the commit node's store write (`put_state`, warm-up included): p99 at most | "
        f"{push['put_state_p99_ms_at_most']} ms (bucket bound) |",
    ]
    if args.push_only:
        return "\n".join(lines)
    lines += [
        "",
        f"{args.fault_commits:,} users get a new version through node {COMMIT_NODE} during each "
        "failure. Seconds from the failure's end (the kill; Redis answering again; DynamoDB "
        "resumed):",
        "",
        "| failure | last commit answered | every device on the newest version"
        " | dropped devices back |",
        "|---|---|---|---|",
    ]
    for key, name in (
        ("sigkill", f"node {args.nodes - 1} SIGKILL"),
        ("redis_restart", f"Redis restart ({args.outage:g} s down)"),
        ("dynamodb_pause", f"DynamoDB pause ({args.outage:g} s)"),
    ):
        row = result[key]
        converged = (
            f"**{row['converged_s']} s**"
            if row["converged_s"] is not None
            else f"not within {CONVERGE_LIMIT_S:g} s ({row['devices_behind']} behind)"
        )
        back = "—" if row["reconnected_s"] is None else f"{row['reconnected_s']} s"
        lines.append(f"| {name} | {row['committed_s']} s | {converged} | {back} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=10_000, help="WebSocket devices in all")
    parser.add_argument("--nodes", type=int, default=3, help="nodes of the cluster (at least 2)")
    parser.add_argument("--push-only", action="store_true", help="stop after the push phase")
    parser.add_argument("--output", default="cluster", help="results file name")
    parser.add_argument("--processes", type=int, default=4, help="worker processes for devices")
    parser.add_argument("--commits", type=int, default=2_000, help="commits of the push phase")
    parser.add_argument("--rate", type=float, default=200.0, help="commits a second (push)")
    parser.add_argument(
        "--warmup", type=int, default=500, help="unmeasured commits first (users with no device)"
    )
    parser.add_argument(
        "--fault-commits", type=int, default=1_000, help="users committed during each failure"
    )
    parser.add_argument("--outage", type=float, default=3.0, help="seconds Redis/DynamoDB is out")
    parser.add_argument(
        "--admit-rate", type=float, default=1500.0, help="COMPANION_ADMIT_RATE of the nodes"
    )
    args = parser.parse_args()
    if args.nodes < 2:
        parser.error("--nodes: a cluster has at least 2 nodes")
    args.commits = min(args.commits, args.devices // 2)
    args.fault_commits = min(args.fault_commits, args.devices // 2)
    load = os.getloadavg()
    result = asyncio.run(run(args))
    result["loadavg_during"] = [load, os.getloadavg()]
    markdown = table(result, args)
    path = write_results(args.output, result, markdown)
    print(path.read_text())


if __name__ == "__main__":
    main()
