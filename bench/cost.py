"""The cost of a user: a scripted day at 1 Hz through the real server, billed per service.

    python -m bench.cost                          # SQLite and DynamoDB Local, one day
    python -m bench.cost --stores sqlite --hours 6 --upload-every 30 --speed 600

A day of frames (sleep, a walking commute, work with two stress spells, lunch, the walk
home, a run, the evening, sleep: :data:`DAY`, made by :mod:`brain.scenarios` at 1 Hz) is
replayed through a real server started in this process on 127.0.0.1 (the app of
``companion serve``: embedded media, rules analyst, local avatar renderer and its cache;
rate limit lifted, debounce 1 ms, old frames taken: see :func:`_settings`), by one phone
over the WebSocket that sends the uploads the phone bridge would send (``--upload-every
bridge``, the default: the bridge's own rule, :mod:`clients.bridge.uploads`, applied to
the frames as they arrive at 1 Hz; or a fixed number of seconds of frames per ``frames``
message) and waits for each ack, while one watch holds a socket and counts the bytes
pushed to it. ``--speed`` replays at that multiple of real time (0: as fast as the acks
come back).

What is counted, and how:

- DynamoDB read and write request units: from ``ReturnConsumedCapacity=TOTAL``, which a
  botocore hook adds to every request of the store's client (DynamoDB Local reports
  capacity by the published rules: 1 WRU per KB written, 1 RRU per 4 KB read strongly).
  Stored bytes: every item of the user, sized by the published rule (attribute names plus
  values, plus 100 bytes of index overhead per item).
- SQLite: the frame rows' payload bytes, and the file after ``VACUUM`` (no per-request bill).
- S3: 0 here (embedded media); the images' bytes are counted as what S3 would store.
- LLM: the same day's windows replayed through brain, once per upload (the pipeline
  analyses after each durable batch; a fast replay through the server would coalesce
  analyses and undercount), against the local fake Anthropic API with the real SDK:
  every window to Claude (today's server with ``COMPANION_ANALYST=anthropic``), then
  through :func:`brain.analyst.trigger.should_trigger`. Tokens as the fake reports them
  (about four bytes of request JSON a token, prompt caching by the API's rules).
- Avatar generations, cache hits and clips, and state changes: from the server's own
  metrics (``companion_avatar_generations_total``, ``companion_avatar_cache_total``,
  ``companion_avatar_clips_total``) and the deltas the watch receives, day by day.

Prices are :data:`PRICES` (one dated table). Writes ``bench/results/cost.{json,md}`` and
``docs/cost.md`` (the page around the table is :data:`bench.cost_report.PAGE`).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import uvicorn
import websockets

from bench.cost_llm import llm_day
from bench.cost_report import render, write_page
from bench.harness import REPO_ROOT, free_port, write_results
from brain import scenarios
from brain.model import Frame
from brain.prices import PRICES
from clients.bridge.uploads import Outgoing, UploadPolicy
from server.app import create_app
from server.auth import DeviceKind, issue
from server.protocol import MAX_FRAMES_PER_MESSAGE, frame_to_wire
from server.runner import uvicorn_config
from server.settings import Settings
from server.store import codec, schema
from server.store.base import Store
from server.store.dynamodb import DynamoDBStore
from server.store.sqlite import SQLiteStore

USER = "cost-user"
SECRET = "cost-bench-secret-0123456789abcdef"

DAY: tuple[tuple[str, int], ...] = (
    ("sleep", 390),  # 00:00-06:30
    ("calm", 60),  # breakfast
    ("hike", 45),  # the walking commute
    ("calm", 105),  # work
    ("stress", 45),  # a deadline
    ("calm", 75),  # work, lunch
    ("calm", 90),
    ("stress", 60),  # a difficult meeting
    ("calm", 105),
    ("hike", 45),  # the walk home
    ("calm", 15),
    ("exercise", 60),  # the evening run
    ("calm", 120),  # evening
    ("fatigue", 60),
    ("calm", 60),
    ("sleep", 105),  # 22:15-24:00
)
"""The scripted day: (scenario, minutes), 24 hours from midnight UTC."""

BRIDGE_BATCH = 100
"""Frames per message at most: the bridge's default ``--batch``."""

_WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem"})
_READS = frozenset({"GetItem", "Query", "Scan", "BatchGetItem"})


def day_frames(start_ms: int, hours: float) -> list[Frame]:
    """The frames of :data:`DAY` from ``start_ms``, 1 Hz, cut after ``hours``."""
    frames: list[Frame] = []
    at = start_ms
    for index, (kind, minutes) in enumerate(DAY):
        frames += scenarios.generate(
            kind, start_ms=at, minutes=minutes, every_s=1, seed=index, device="watch-1"
        )
        at += minutes * 60_000
    end = start_ms + int(hours * 3_600_000)
    return [frame for frame in frames if frame.ts < end]


Upload = list[Frame]


@dataclass(frozen=True, slots=True)
class Uploads:
    """One day's frames as the phone sends them: the messages, and how many of them a
    spike sent early (the bridge's rule only)."""

    messages: list[Upload]
    spikes: int = 0


def bridge_uploads(frames: Sequence[Frame], policy: UploadPolicy | None = None) -> Uploads:
    """The uploads the phone bridge sends for ``frames`` arriving live, each at its own
    ``ts``: its rule (:class:`clients.bridge.uploads.Outgoing`) applied frame by frame."""
    wire = {i: frame_to_wire(frame) for i, frame in enumerate(frames)}
    held = Outgoing(policy or UploadPolicy(), wire.get)
    messages: list[Upload] = []

    def send_due(now: float) -> None:
        while batch := held.take(BRIDGE_BATCH, now):
            messages.append([frames[i] for i, _ in batch])

    for i, frame in enumerate(frames):
        now = frame.ts / 1000
        send_due(now)  # a linger that ran out before this frame arrived
        held.add(i, wire[i], now)
        send_due(now)
    held.flush()  # the end of the day's replay: nothing more comes
    send_due(math.inf)
    return Uploads(messages, held.spikes)


def fixed_uploads(frames: Sequence[Frame], seconds: int) -> Uploads:
    """``frames`` cut into uploads of ``seconds`` frames each (1 Hz)."""
    return Uploads([list(frames[i : i + seconds]) for i in range(0, len(frames), seconds)])


@dataclass
class Capacity:
    """Request units a DynamoDB client consumed, by table, read and write."""

    reads: Counter[str] = field(default_factory=Counter)
    writes: Counter[str] = field(default_factory=Counter)
    requests: Counter[str] = field(default_factory=Counter)

    def install(self, client: Any) -> None:
        """Ask for capacity on every request of ``client`` and add up the answers."""
        events = client.meta.events
        events.register("before-parameter-build.dynamodb", self._ask)
        events.register("after-call.dynamodb", self._count)

    def _ask(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        if model.name in _WRITES | _READS:
            params["ReturnConsumedCapacity"] = "TOTAL"

    def _count(self, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        consumed = parsed.get("ConsumedCapacity")
        if consumed is None:
            return
        for entry in consumed if isinstance(consumed, list) else [consumed]:
            table = str(entry.get("TableName", "?"))
            units = float(entry.get("CapacityUnits", 0.0))
            (self.writes if model.name in _WRITES else self.reads)[table] += units
            self.requests[f"{model.name} {table}"] += 1


def item_size(item: dict[str, Any]) -> int:
    """An item's size by DynamoDB's published rule: names plus values (numbers about one
    byte per two digits plus one), as billed for storage before the 100-byte overhead."""

    def value_size(value: dict[str, Any]) -> int:
        (kind, data), *_ = value.items()
        if kind == "S":
            return len(str(data).encode())
        if kind == "B":
            return len(data)
        if kind == "N":
            return math.ceil(len(str(data).lstrip("-").replace(".", "")) / 2) + 1
        if kind == "BOOL" or kind == "NULL":
            return 1
        if kind == "L":
            return 3 + sum(value_size(v) + 1 for v in data)
        if kind == "M":
            return 3 + sum(len(k.encode()) + value_size(v) + 1 for k, v in data.items())
        return len(orjson.dumps(data))

    return sum(len(name.encode()) + value_size(value) for name, value in item.items())


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        self.ready.set()

    def install_signal_handlers(self) -> None:
        """The benchmark owns the signals."""


@asynccontextmanager
async def serving(settings: Settings, store: Store) -> AsyncIterator[str]:
    """The server's app on a free loopback port for the block; yields its base URL."""
    app = create_app(settings, store=store)
    port = free_port()
    config = uvicorn_config(settings, host="127.0.0.1", port=port, log_level="warning")
    config.app = app
    config.load()
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(60):
        await server.ready.wait()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 60)


async def _watch(address: str, token: str, pushed: Counter[str], stop: asyncio.Event) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with websockets.connect(f"ws://{address}/v1/ws", additional_headers=headers) as ws:
        await ws.send(orjson.dumps({"op": "hello", "client": "cost-watch"}).decode())
        while not stop.is_set():
            try:
                async with asyncio.timeout(0.5):
                    message = await ws.recv()
            except TimeoutError:
                continue
            except websockets.ConnectionClosed:
                return  # the server shuts down (1012) after the replay
            pushed["bytes"] += len(message)
            data = orjson.loads(message)
            pushed[data["op"]] += 1
            if data["op"] == "delta" and "state" in data.get("changes", {}):
                pushed["state_changes"] += 1


Probe = Callable[[], dict[str, Any]]
"""Counters read at the end of each replayed day (e.g. the DynamoDB capacity so far)."""


async def replay(
    settings: Settings,
    store: Store,
    days: Sequence[Uploads],
    args: argparse.Namespace,
    probe: Probe = dict,
) -> dict[str, Any]:
    """Replay ``days`` of uploads through a server on ``store``, one day after the other.

    Returns the counters as they stood at the end of each day (``snapshots``): pushed
    messages and bytes, avatar generations, cache outcomes and clips, and ``probe()``.
    """
    now_s = int(time.time())
    phone = issue(SECRET, USER, DeviceKind.PHONE, ttl_s=86_400, now_s=now_s)
    watch = issue(SECRET, USER, DeviceKind.WATCH, ttl_s=86_400, now_s=now_s)
    first_ts = days[0].messages[0][0].ts
    pushed: Counter[str] = Counter()
    stop = asyncio.Event()
    snapshots = []
    seq = 0
    async with serving(settings, store) as address:
        watcher = asyncio.create_task(_watch(address, watch, pushed, stop))
        headers = {"Authorization": f"Bearer {phone}"}
        started = time.monotonic()
        async with (
            websockets.connect(
                f"ws://{address}/v1/ws", additional_headers=headers, max_size=2**20
            ) as ws,
            httpx.AsyncClient(base_url=f"http://{address}", timeout=10) as http,
        ):
            await ws.send(orjson.dumps({"op": "hello", "client": "cost-phone"}).decode())
            for uploads in days:
                for batch in uploads.messages:
                    if args.speed > 0:  # send an upload when its last frame would exist
                        due = started + (batch[-1].ts - first_ts + 1000) / 1000 / args.speed
                        await asyncio.sleep(max(0.0, due - time.monotonic()))
                    await _upload(ws, seq, batch)
                    seq += 1
                await _settle(http)
                metrics = (await http.get("/metrics")).text
                snapshots.append(
                    {
                        "pushed": dict(pushed),
                        "avatar_generations": _metric(
                            metrics, "companion_avatar_generations_total", "ok"
                        ),
                        "avatar_cache": {
                            outcome: _metric(metrics, "companion_avatar_cache_total", outcome)
                            for outcome in ("hit", "miss")
                        },
                        "avatar_clips": _metric(metrics, "companion_avatar_clips_total", "ok"),
                        "analyses": _metric(metrics, "companion_analyses_total", None),
                        **probe(),
                    }
                )
        elapsed = time.monotonic() - started
        stop.set()
        await watcher
    return {"replay_s": round(elapsed, 1), "uploads": seq, "snapshots": snapshots}


async def _upload(ws: Any, seq: int, batch: Sequence[Frame]) -> None:
    """Send one ``frames`` message and wait for its ack; exit unless all were accepted."""
    body = [codec.frame_to_dict(frame) for frame in batch]
    await ws.send(orjson.dumps({"op": "frames", "seq": seq, "frames": body}).decode())
    async with asyncio.timeout(30):
        while (answer := orjson.loads(await ws.recv()))["op"] != "ack":
            pass
    if answer["accepted"] != len(batch):
        raise SystemExit(f"upload {seq} not fully accepted: {answer}")


async def _settle(http: httpx.AsyncClient) -> None:
    """Wait (within a minute) until the avatar queue is empty twice in a row."""
    async with asyncio.timeout(60):
        quiet = 0
        while quiet < 2:
            text = (await http.get("/metrics")).text
            waiting = _metric(text, "companion_avatar_waiting", None)
            quiet = quiet + 1 if waiting == 0 else 0
            await asyncio.sleep(0.5)


def _metric(text: str, name: str, label: str | None) -> float:
    """The sum of a Prometheus sample's values (with a label value, if given)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        if label is not None and f'"{label}"' not in line:
            continue
        total += float(line.rsplit(" ", 1)[1])
    return total


async def run_sqlite(days: Sequence[Uploads], args: argparse.Namespace) -> dict[str, Any]:
    """The days on the embedded SQLite store: bytes stored, pushed, generated."""
    with tempfile.TemporaryDirectory(prefix="cost-sqlite-") as data_dir:
        settings = _settings(pathlib.Path(data_dir), len(days))
        store = SQLiteStore(settings.sqlite_path)
        result = await replay(settings, store, days, args)
        result.update(_sqlite_sizes(settings.sqlite_path))
        result["media_bytes"] = _dir_bytes(settings.media_dir)
    return {"store": "sqlite", **result}


def _sqlite_sizes(path: pathlib.Path) -> dict[str, Any]:
    import sqlite3

    with sqlite3.connect(path) as db:
        rows, payload = db.execute(
            "SELECT count(*), coalesce(sum(length(payload)), 0) FROM frame_buckets"
        ).fetchone()
        db.execute("VACUUM")
    return {"frame_rows": rows, "frame_payload_bytes": payload, "file_bytes": path.stat().st_size}


def _dir_bytes(path: pathlib.Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


async def run_dynamodb(
    days: Sequence[Uploads], args: argparse.Namespace, endpoint: str
) -> dict[str, Any]:
    """The days on DynamoDB Local: request units by table, bytes stored by table."""
    prefix = f"cost{int(time.time())}-"
    with tempfile.TemporaryDirectory(prefix="cost-dynamodb-") as data_dir:
        settings = _settings(pathlib.Path(data_dir), len(days))
        store = DynamoDBStore(table_prefix=prefix, region="us-east-1", endpoint_url=endpoint)
        await store.open()
        await store.create_tables()
        capacity = Capacity()
        capacity.install(store.client)
        tables = {spec.suffix: spec.name(prefix) for spec in schema.TABLES}

        def probe() -> dict[str, Any]:
            return {
                "wru": {suffix: capacity.writes[name] for suffix, name in tables.items()},
                "rru": {suffix: capacity.reads[name] for suffix, name in tables.items()},
            }

        try:
            result = await replay(settings, store, days, args, probe)
            await store.open()  # the server closed it on shutdown
            stored = await _stored_bytes(store, prefix)
            result["media_bytes"] = _dir_bytes(settings.media_dir)
        finally:
            await store.open()
            await schema.delete_tables(store.client, prefix)
            await store.close()
    return {"store": "dynamodb", **result, "requests": dict(capacity.requests), "stored": stored}


async def _stored_bytes(store: DynamoDBStore, prefix: str) -> dict[str, dict[str, int]]:
    client = store.client
    sizes: dict[str, dict[str, int]] = {}
    for spec in schema.TABLES:
        items = bytes_ = 0
        start: dict[str, Any] = {}
        while True:
            page = await client.scan(TableName=spec.name(prefix), **start)
            for item in page.get("Items", []):
                items += 1
                bytes_ += item_size(item) + 100  # the per-item index overhead billed
            if not page.get("LastEvaluatedKey"):
                break
            start = {"ExclusiveStartKey": page["LastEvaluatedKey"]}
        sizes[spec.suffix] = {"items": items, "bytes": bytes_}
    return sizes


def _old_item_bytes(frame: Frame) -> int:
    """The size of the one-item-per-frame layout's item of ``frame`` (before the buckets)."""
    return item_size(
        {
            "user_id": {"S": USER},
            "sk": {"S": frame.key},
            "ts": {"N": str(frame.ts)},
            "expires_at": {"N": str(codec.expires_at(frame, 30))},
            "payload": {"S": codec.encode_frame(frame).decode()},
        }
    )


def _settings(data_dir: pathlib.Path, days: int) -> Settings:
    # A day replayed in seconds sends far more than 20 messages a second on one socket:
    # the per-connection rate limit is lifted, the analysis debounce is 1 ms (each upload
    # is analysed on its own as far as the analyses keep up, as in real time, instead of
    # one analysis a second of replay), and frames are taken as old as the first replayed
    # day (none of them bills anything; everything else is default).
    return Settings(
        data_dir=data_dir,
        secret=SECRET,
        port=0,
        log_level="warning",
        rate_per_s=1e6,
        debounce_ms=1,
        max_frame_age_s=max(7, days + 1) * 86_400,
    )


@asynccontextmanager
async def dynamodb_local() -> AsyncIterator[str]:
    """DynamoDB Local on a free loopback port (``AWS_ENDPOINT_URL_DYNAMODB`` if set)."""
    given = os.environ.get("AWS_ENDPOINT_URL_DYNAMODB")
    if given:
        yield given
        return
    home = REPO_ROOT / ".cache" / "dynamodb-local"
    java = shutil.which("java")
    if java is None or not (home / "DynamoDBLocal.jar").is_file():
        raise SystemExit("DynamoDB Local is not installed (scripts/install-dynamodb-local)")
    port = free_port()
    command = [java, f"-Djava.library.path={home / 'DynamoDBLocal_lib'}", "-jar"]
    command += [str(home / "DynamoDBLocal.jar"), "-inMemory", "-sharedDb", "-port", str(port)]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        async with asyncio.timeout(60):
            while True:
                try:
                    async with httpx.AsyncClient() as http:
                        await http.get(endpoint)
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.2)
        yield endpoint
    finally:
        process.terminate()
        async with asyncio.timeout(10):
            await process.wait()


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    for name, value in {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}.items():
        os.environ.setdefault(name, value)
    # The days end at yesterday's midnight (UTC): the server takes frames up to 7 days old.
    first_day = (int(time.time()) // 86_400 - args.days) * 86_400_000
    frame_days = [day_frames(first_day + d * 86_400_000, args.hours) for d in range(args.days)]
    frames = frame_days[-1]
    if args.upload_every == "bridge":
        days = [bridge_uploads(day) for day in frame_days]
    else:
        days = [fixed_uploads(day, int(args.upload_every)) for day in frame_days]
    print(
        f"{args.days} x {len(frames)} frames in {len(days[-1].messages)} uploads a day",
        file=sys.stderr,
        flush=True,
    )
    runs = []
    if "sqlite" in args.stores:
        runs.append(await run_sqlite(days, args))
        print(f"sqlite: {runs[-1]['replay_s']} s", file=sys.stderr, flush=True)
    if "dynamodb" in args.stores:
        async with dynamodb_local() as endpoint:
            runs.append(await run_dynamodb(days, args, endpoint))
        print(f"dynamodb: {runs[-1]['replay_s']} s", file=sys.stderr, flush=True)
    llm = await llm_day(frames, upload_ends=[batch[-1].ts + 1 for batch in days[-1].messages])
    return {
        "hours": args.hours,
        "days": args.days,
        "frames": len(frames),
        "old_item_bytes": round(sum(_old_item_bytes(f) for f in frames) / len(frames)),
        "upload_every_s": args.upload_every,
        "uploads_per_day": len(days[-1].messages),
        "spike_uploads_per_day": days[-1].spikes,
        "speed": args.speed,
        "prices": PRICES,
        "runs": runs,
        "llm": llm,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stores", default="sqlite,dynamodb", type=lambda s: s.split(","))
    parser.add_argument("--hours", type=float, default=24.0, help="how much of each day")
    parser.add_argument(
        "--days", type=int, default=2, help="days replayed (the last is reported: warm caches)"
    )
    parser.add_argument(
        "--upload-every",
        default="bridge",
        help="seconds of 1 Hz frames per upload, or 'bridge' (default): as the phone bridge"
        " sends them (a minute per upload, earlier on a spike)",
    )
    parser.add_argument(
        "--speed", type=float, default=0.0, help="x real time (0: as fast as acks come)"
    )
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/cost.md")
    args = parser.parse_args()
    if not 1 <= args.days <= 28:
        parser.error("--days must be 1..28 (frames are kept 30 days)")
    if args.upload_every != "bridge" and not (
        args.upload_every.isdigit() and 1 <= int(args.upload_every) <= MAX_FRAMES_PER_MESSAGE
    ):
        parser.error(f"--upload-every must be 'bridge' or 1..{MAX_FRAMES_PER_MESSAGE}")
    data = asyncio.run(main_async(args))
    markdown = render(data)
    print(markdown)
    print(write_results("cost", data, markdown))
    if not args.no_docs:
        print(write_page(markdown))


if __name__ == "__main__":
    main()
