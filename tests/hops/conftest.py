"""Fixtures of the acks-across-hops tests: a live server on each store adapter, a clock the
test moves, and helpers to read the devices and commands routes.

The DynamoDB variant runs on a real DynamoDB Local (``tests/services.py``) with fresh tables
per test; the SQLite one on a file in the test's directory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from server.settings import Settings
from server.store.base import Store
from server.store.sqlite import SQLiteStore
from tests.conftest import LiveServer, start_server, token
from tests.server.conftest import server_log
from tests.services import dynamodb_local
from tests.stores import DynamoDBStoreFactory, dynamodb_store_factory

__all__ = ["dynamodb_local", "dynamodb_store_factory", "server_log"]


@dataclass
class Clock:
    """The server's clock in these tests: real time plus an offset the test may move."""

    offset: float = 0.0

    def __call__(self) -> float:
        import time

        return time.time() + self.offset


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(
    params=[pytest.param("sqlite"), pytest.param("dynamodb", marks=pytest.mark.dynamodb)]
)
async def hops_store(request: pytest.FixtureRequest, settings: Settings) -> AsyncIterator[Store]:
    """A fresh store of the adapter named by the parameter (the server opens and closes it)."""
    if request.param == "sqlite":
        yield SQLiteStore(settings.data_dir / "hops.sqlite3")
        return
    factory: DynamoDBStoreFactory = request.getfixturevalue("dynamodb_store_factory")
    async with factory() as dynamodb:
        yield dynamodb  # the server opens and closes it; the factory deletes its tables


@pytest.fixture
async def hops_server(
    settings: Settings, hops_store: Store, clock: Clock
) -> AsyncIterator[LiveServer]:
    """The core server on ``hops_store``, with the test's clock."""
    async with start_server(settings, store=hops_store, clock=clock) as live:
        yield live


def _service(user: str) -> dict[str, str]:
    """A service token valid for a day (tests move the server's clock by hours)."""
    return {"Authorization": f"Bearer {token(user, 'service', ttl=24 * 3600)}"}


async def devices_of(client: httpx.AsyncClient, user: str) -> dict[str, Any]:
    """``GET /v1/users/{user}/devices`` with a service token (no REST rate limit)."""
    response = await client.get(f"/v1/users/{user}/devices", headers=_service(user))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def commands_of(client: httpx.AsyncClient, user: str) -> list[dict[str, Any]]:
    """``GET /v1/users/{user}/commands`` with a service token (no REST rate limit)."""
    response = await client.get(f"/v1/users/{user}/commands", headers=_service(user))
    assert response.status_code == 200, response.text
    commands: list[dict[str, Any]] = response.json()["commands"]
    return commands
