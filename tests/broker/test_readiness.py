"""/readyz names the store and the broker, is 503 while either is down, and answers within a
second even when a dependency hangs (a stopped or paused redis-server, a store endpoint that
accepts connections and never answers)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import httpx
import pytest

from server.settings import Settings
from server.store.dynamodb import DynamoDBStore
from tests.broker.conftest import RedisProcess, eventually, quick_broker
from tests.conftest import LiveServer, start_server
from tests.services import FAKE_AWS_ENV


async def ready(live: LiveServer) -> tuple[int, dict[str, Any], float]:
    """Status, body and duration of one /readyz."""
    async with httpx.AsyncClient(base_url=live.url, timeout=5) as http:
        started = time.monotonic()
        answer = await http.get("/readyz")
        return answer.status_code, answer.json(), time.monotonic() - started


async def test_readyz_is_200_naming_the_store_and_the_broker_when_both_answer(
    settings: Settings, redis_process: RedisProcess
) -> None:
    async with start_server(settings, broker=quick_broker(redis_process.url)) as live:
        status, body, _ = await ready(live)
    assert status == 200
    assert body["checks"]["store"] == {"ok": True}
    assert body["checks"]["broker"]["ok"] is True
    assert body["checks"]["broker"]["connected"] is True


async def test_readyz_is_503_naming_the_broker_while_redis_is_down_and_200_once_back(
    settings: Settings, redis_process: RedisProcess
) -> None:
    broker = quick_broker(redis_process.url)
    async with start_server(settings, broker=broker) as live:
        await redis_process.stop()
        await eventually(lambda: not broker.health().connected)
        status, body, took = await ready(live)
        assert status == 503 and took < 1.0
        assert body["detail"] == "not ready: broker"
        assert body["checks"]["store"] == {"ok": True}
        assert body["checks"]["broker"]["connected"] is False
        assert "companion_broker_connected 0.0" in await scrape(live)
        await redis_process.start()
        await eventually(lambda: broker.health().connected)
        status, body, _ = await ready(live)
        assert status == 200 and body["checks"]["broker"]["reconnects"] == 1
        metrics = await scrape(live)
        assert "companion_broker_connected 1.0" in metrics
        assert "companion_broker_reconnects_total 1.0" in metrics
        assert "companion_broker_last_heard_age_seconds " in metrics


async def scrape(live: LiveServer) -> str:
    async with httpx.AsyncClient(base_url=live.url, timeout=5) as http:
        return (await http.get("/metrics")).text


async def test_readyz_answers_within_a_second_while_redis_hangs(
    settings: Settings, redis_process: RedisProcess
) -> None:
    broker = quick_broker(redis_process.url)
    async with start_server(settings, broker=broker) as live:
        redis_process.pause()
        try:
            async with asyncio.timeout(10):
                while True:
                    status, body, took = await ready(live)
                    assert took < 1.0
                    if status == 503:
                        break
            assert body["checks"]["broker"]["connected"] is False
        finally:
            redis_process.resume()


@pytest.fixture
async def silent_endpoint() -> AsyncIterator[str]:
    """An HTTP endpoint on loopback that accepts connections and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await reader.read()  # until the client gives up

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_readyz_answers_within_a_second_with_503_when_the_store_hangs(
    settings: Settings, silent_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in FAKE_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    store = DynamoDBStore(table_prefix="t-", region="us-east-1", endpoint_url=silent_endpoint)
    async with start_server(settings, store=store) as live:
        status, body, took = await ready(live)
    assert status == 503 and took < 1.0
    assert body["detail"] == "not ready: store"
    assert body["checks"]["store"]["ok"] is False
    assert body["checks"]["broker"]["ok"] is True


async def test_the_broker_password_never_reaches_the_log(
    settings: Settings, redis_process: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret_url = redis_process.url.replace("redis://", "redis://:s3cret-pass@")
    with_password = replace(settings, broker=secret_url)
    async with start_server(with_password, broker=quick_broker(redis_process.url)) as live:
        status, _, _ = await ready(live)
    assert status == 200
    assert any("companion ready" in r.getMessage() for r in caplog.records)
    assert not any("s3cret-pass" in r.getMessage() for r in caplog.records)
