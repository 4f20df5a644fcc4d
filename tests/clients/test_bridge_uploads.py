"""The bridge sends a minute's frames together, against a real server on loopback.

The source is a queue the test fills (as a watch would over BLE); what reached the server
is read back from its export. A reconnect is a real server stopped (its sockets closed with
1012) and another started on the same data directory; the bridge's connector dials
whichever server is up (as a DNS name would).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from clients.bridge.bridge import Bridge
from clients.bridge.journal import Journal
from clients.bridge.uploads import UploadPolicy
from clients.connect.access import endpoints
from server.settings import Settings
from tests.conftest import LiveServer, start_server, token

Frame = dict[str, Any]


class QueueSource:
    """Frames the test puts, one chunk each (a source that never ends by itself)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[list[Frame]] = asyncio.Queue()

    async def chunks(self, cursor: Any) -> AsyncIterator[tuple[list[Frame], Any]]:
        while True:
            yield await self.queue.get(), None


def minute_frames(minute_start_ms: int, seconds: range) -> list[Frame]:
    return [
        {"ts": minute_start_ms + s * 1000, "hr": 70.0 + s % 7, "steps": 0, "device": "w"}
        for s in seconds
    ]


def recent_minute(back: int) -> int:
    """The start of the minute ``back`` minutes before this one (the server takes it)."""
    return (int(time.time()) // 60 - back) * 60_000


async def until(condition: Callable[[], bool], within: float = 10.0) -> None:
    """Return once ``condition()`` holds; fail the test after ``within`` seconds."""
    async with asyncio.timeout(within):
        # Polled: the bridge's counters and journal have no event to wait on.
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)  # the poll interval of a deadline loop


@asynccontextmanager
async def running(bridge: Bridge) -> AsyncIterator[Bridge]:
    task = asyncio.create_task(bridge.run())
    try:
        yield bridge
    finally:
        bridge.stop()
        await asyncio.wait_for(task, 10)


def make_bridge(
    tmp_path: Path, url: str, source: QueueSource, policy: UploadPolicy, **kwargs: Any
) -> tuple[Bridge, Journal]:
    journal = Journal(tmp_path / "bridge.journal")
    journal.open()

    async def quick(seconds: float) -> None:
        await asyncio.sleep(0)

    bridge = Bridge(
        endpoints(url), token("alice", "phone"), source, journal,
        uploads=policy, sleep=quick, rand=lambda: 0.5, **kwargs,
    )  # fmt: skip
    return bridge, journal


async def stored(live: LiveServer) -> Counter[int]:
    async with live.http() as http:
        headers = {"Authorization": f"Bearer {token('ops', 'service')}"}
        exported = (await http.get("/v1/users/alice/export", headers=headers)).json()
    return Counter(int(f["ts"]) for f in exported["frames"])


async def test_the_bridge_sends_one_batch_per_minute_and_holds_the_unfinished_one(
    tmp_path: Path, settings: Settings
) -> None:
    source = QueueSource()
    start = recent_minute(5)
    frames = minute_frames(start, range(150))  # two whole minutes and half of a third
    async with start_server(settings) as live:
        bridge, journal = make_bridge(tmp_path, live.url, source, UploadPolicy(linger_s=60))
        async with running(bridge):
            for i in range(0, len(frames), 10):
                source.queue.put_nowait(frames[i : i + 10])
            await until(lambda: bridge.stats["frames_acked"] == 120)
            assert bridge.stats["batches_sent"] == 2  # one message a minute
            assert len(journal) == 30  # the third minute is held, journaled
            assert set(await stored(live)) == {f["ts"] for f in frames[:120]}

            bridge.flush()  # the app goes to the background
            await until(lambda: len(journal) == 0)
            assert bridge.stats["batches_sent"] == 3
            assert set(await stored(live)) == {f["ts"] for f in frames}
    journal.close()


async def test_held_frames_go_once_their_linger_has_passed(
    tmp_path: Path, settings: Settings
) -> None:
    source = QueueSource()
    frames = minute_frames(recent_minute(3), range(5))
    linger = 0.5
    async with start_server(settings) as live:
        bridge, journal = make_bridge(tmp_path, live.url, source, UploadPolicy(linger_s=linger))
        async with running(bridge):
            put_at = time.monotonic()
            source.queue.put_nowait(frames)
            await until(lambda: bridge.stats["frames_acked"] == 5)
            waited = time.monotonic() - put_at
            assert bridge.stats["batches_sent"] == 1
            assert linger <= waited < linger + 5
    journal.close()


async def test_no_frame_is_lost_or_stored_twice_across_a_server_restart(
    tmp_path: Path, settings: Settings
) -> None:
    source = QueueSource()
    first, second = recent_minute(5), recent_minute(4)
    before = minute_frames(first, range(60)) + minute_frames(second, range(30))
    after = minute_frames(second, range(30, 60)) + minute_frames(recent_minute(3), range(1))
    current: dict[str, str] = {}

    async def dial(url: str, **kwargs: Any) -> ClientConnection:
        return await connect(current["ws"], **kwargs)  # whichever server is up

    async with start_server(settings) as live:
        current["ws"] = live.ws_url
        bridge, journal = make_bridge(
            tmp_path, live.url, source, UploadPolicy(linger_s=60), connector=dial
        )
        task = asyncio.create_task(bridge.run())
        source.queue.put_nowait(before)
        await until(lambda: bridge.stats["frames_acked"] == 60)
        assert len(journal) == 30  # the second minute's first half: held, not sent
    # The server is gone (1012); frames keep coming while the bridge reconnects.
    source.queue.put_nowait(after)
    await until(lambda: bridge.stats["frames_read"] == len(before) + len(after))
    async with start_server(settings) as live:
        current["ws"] = live.ws_url
        try:
            await until(lambda: bridge.stats["frames_acked"] == 120, within=20)
            assert len(journal) == 1  # the third minute's frame waits for its minute
            bridge.flush()
            await until(lambda: len(journal) == 0)
            counts = await stored(live)
        finally:
            bridge.stop()
            await asyncio.wait_for(task, 10)
    journal.close()
    assert set(counts) == {f["ts"] for f in before + after}
    assert max(counts.values()) == 1
    assert bridge.stats["connects"] == 2
