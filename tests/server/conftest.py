"""Helpers shared by the server tests."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from tests.conftest import auth


def now_ms() -> int:
    return int(time.time() * 1000)


def frame(ts: int, hr: float = 70.0, device: str = "phone-1", **more: Any) -> dict[str, Any]:
    return {"ts": ts, "hr": hr, "device": device, **more}


async def close_code(ws: ClientConnection, within: float = 5.0) -> int | None:
    """Read (and drop) messages until the server closes; the close code it sent."""
    async with asyncio.timeout(within):
        try:
            while True:
                await ws.recv()
        except ConnectionClosed:
            pass
    return ws.close_code


async def commit(client: httpx.AsyncClient, user: str, **changes: Any) -> dict[str, Any]:
    """Commit state changes for ``user`` through the demo route (a service token)."""
    response = await client.post(
        f"/v1/demo/users/{user}/state", json=changes, headers=auth(user, "service")
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["committed"], body
    return body


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def server_log() -> Iterator[list[logging.LogRecord]]:
    """Every record the server and uvicorn log during the test (uvicorn's loggers do not
    propagate to the root, so ``caplog`` alone would miss its errors)."""
    keep = _Keep()
    loggers = [logging.getLogger(name) for name in ("", "uvicorn")]
    for logger in loggers:
        logger.addHandler(keep)
    try:
        yield keep.records
    finally:
        for logger in loggers:
            logger.removeHandler(keep)


def errors_in(records: list[logging.LogRecord]) -> list[str]:
    """The records at ERROR or above, or with a traceback: what a client must never cause."""
    return [
        f"{r.name}: {r.getMessage()[:200]}"
        for r in records
        if r.levelno >= logging.ERROR or r.exc_info is not None
    ]
