"""The fleet page in a real Chromium, on a real two-node cluster.

Two ``python -m server.cli serve`` processes share a redis-server (broker and membership)
and one SQLite file. The page, opened on the first node, shows both nodes with their
connections; when the second is SIGKILLed (no chance to leave the cluster), it shows that
node down within seconds. Screenshots go to ``test-artifacts/``. Waits are Playwright's
auto-retrying assertions and child-output waits, each with a timeout.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
import websockets
from playwright.async_api import Browser, Locator, Page, expect
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection

from tests.clients.conftest import READY_LINE, Child, free_port
from tests.clients.test_debug_page import ARTIFACTS, browser
from tests.conftest import SECRET, auth, recv_op, send, token

__all__ = ["browser"]

pytestmark = [pytest.mark.browser, pytest.mark.redis, pytest.mark.slow]

KILLED_SHOWN_WITHIN_S = 10.0
"""The membership's TTL is 5 s; the page must show a killed node down well within this."""

Node = tuple[Child, int]


@pytest.fixture
async def cluster(
    redis_server: str, tmp_path: Path
) -> AsyncIterator[Callable[[], asyncio.Future[Node] | object]]:
    """Start nodes of one cluster (``start()`` → (child, port)); all stopped at the end."""
    client = aioredis.Redis.from_url(redis_server)
    async for key in client.scan_iter("companion:node*"):
        await client.delete(key)
    await client.aclose()
    env = {
        **os.environ,
        "COMPANION_DATA_DIR": str(tmp_path / "data"),
        "COMPANION_SECRET": SECRET,
        "COMPANION_BROKER": redis_server,
        "COMPANION_LOG_LEVEL": "info",
        "PYTHONUNBUFFERED": "1",
    }
    children: list[Child] = []

    async def start() -> Node:
        port = free_port()
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "server.cli", "serve", "--host", "127.0.0.1"),
            *("--port", str(port)),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        child = Child(f"node-{port}", process)
        children.append(child)
        await child.expect(re.escape(READY_LINE), limit_s=60)
        return child, port

    yield start
    for child in reversed(children):
        await child.stop()


async def device(port: int, user: str, kind: str) -> ClientConnection:
    """A device socket of ``user`` on the node at ``port``, past its hello."""
    ws = await websockets.connect(
        f"ws://127.0.0.1:{port}/v1/ws", additional_headers=auth(user, kind)
    )
    await send(ws, {"op": "hello", "client": "test"})
    assert (await recv_op(ws, "snapshot"))["op"] == "snapshot"
    return ws


async def exported(url_a: str, url_b: str, name: str) -> float:
    """The sum of the sample ``name`` (no labels) in both nodes' ``/metrics``."""
    total = 0.0
    async with httpx.AsyncClient(timeout=10) as http:
        for url in (url_a, url_b):
            text = (await http.get(f"{url}/metrics")).text
            total += sum(
                s.value
                for family in text_string_to_metric_families(text)
                for s in family.samples
                if s.name == name
            )
    return total


def row(page: Page, port: int) -> Locator:
    return page.locator(f'#nodes tr[data-node="{socket.gethostname()}:{port}"]')


async def test_the_page_shows_both_nodes_and_a_killed_one_goes_down(
    cluster: Callable[[], object], browser: Browser
) -> None:
    (node_a, port_a), (b, port_b) = await cluster(), await cluster()  # type: ignore[misc]
    url_a, url_b = f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}"
    on_a = await device(port_a, "alice", "phone")
    on_b = await device(port_b, "alice", "watch")

    page = await browser.new_page(viewport={"width": 1440, "height": 1100})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(f"{url_a}/ops?token={token('oncall', 'operator')}")
    await expect(page.locator("#status")).to_have_text("open")
    await expect(page.locator("#who")).to_have_text("operator oncall")
    await expect(page.locator("#nodes tr")).to_have_count(2, timeout=10_000)
    await expect(row(page, port_a)).to_have_attribute("data-up", "true")
    await expect(row(page, port_b)).to_have_attribute("data-up", "true")
    await expect(row(page, port_a).locator("td.name")).to_contain_text("this node")
    await expect(row(page, port_b).locator("td.conns")).to_have_text("1 (watch 1)")
    await expect(page.locator("#conn-total")).to_have_text("2")
    await expect(page.locator('#kinds [data-kind="watch"] .bar-value')).to_have_text("1")

    # A change committed through node B is published, pushed on both, and shows up here.
    async with httpx.AsyncClient(base_url=url_b, timeout=10) as http:
        for mood in ("anxious", "tired", "content"):
            change = {"state": "stressed", "mood": mood, "energy": 30}
            answer = await http.post(
                "/v1/demo/users/alice/state", json=change, headers=auth("svc", "service")
            )
            assert answer.status_code == 200
    # Each change and each avatar that follows it is a delta; the page's total is the sum
    # of what the two nodes' /metrics say (polled until both agree, within a deadline).
    async with asyncio.timeout(15):
        while True:
            published = await exported(url_a, url_b, "companion_deltas_published_total")
            shown = await page.locator("#deltas-total").inner_text()
            if published >= 3 and shown == f"{published:,.0f}":
                break
            await asyncio.sleep(0.2)  # poll interval of a deadline loop
    await expect(page.locator("#push-p99")).to_have_text(re.compile(r"^\d+(\.\d)? ms$"))
    await expect(page.locator("#nodes-up")).to_have_text("2")
    await expect(page.locator("#nodes-down")).to_have_text("0")
    spark = page.locator('.spark[data-series="connections"] path.line')
    await expect(spark).to_have_attribute("d", re.compile(r"^M.+L"), timeout=10_000)  # drawn

    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "ops-two-nodes.png"), full_page=True)

    await b.kill()  # SIGKILL: it never leaves the cluster; its heartbeat just stops
    killed_at = time.monotonic()
    await expect(row(page, port_b)).to_have_attribute(
        "data-up", "false", timeout=KILLED_SHOWN_WITHIN_S * 1000
    )
    shown_after = time.monotonic() - killed_at
    await expect(page.locator("#nodes-down")).to_have_text("1")
    await expect(row(page, port_b).locator("td.state")).to_have_text("down")
    await expect(row(page, port_b).locator("td.seen")).to_contain_text("gone")
    await expect(row(page, port_a)).to_have_attribute("data-up", "true")
    await expect(page.locator("#conn-total")).to_have_text("1")  # totals: nodes that are up
    await page.screenshot(path=str(ARTIFACTS / "ops-node-killed.png"), full_page=True)
    print(f"killed node shown down after {shown_after:.1f} s")
    assert shown_after < KILLED_SHOWN_WITHIN_S
    assert errors == []
    operator_token = page.url.split("token=")[1]
    assert not [line for line in node_a.lines if operator_token in line]  # never logged
    await on_a.close()
    await on_b.close()
    await page.close()
