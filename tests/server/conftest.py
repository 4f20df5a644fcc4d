"""Helpers shared by the server tests."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
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
