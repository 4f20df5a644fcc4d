"""Store fixtures shared by the suites that test a contract on both adapters: a
``dynamodb_store_factory`` (fresh tables of DynamoDB Local per store, deleted afterwards)
and a ``store`` parametrized over SQLite and DynamoDB Local.

A conftest or test module imports the fixtures it uses by name, with ``dynamodb_local``
(:mod:`tests.services`) beside them.
"""

from __future__ import annotations

import pathlib
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest

from brain.backoff import Backoff, instant
from server.store import schema
from server.store.base import Store
from server.store.dynamodb import DynamoDBStore
from server.store.sqlite import SQLiteStore

__all__ = ["DynamoDBStoreFactory", "dynamodb_store_factory", "store"]

DynamoDBStoreFactory = Callable[..., AbstractAsyncContextManager[DynamoDBStore]]


@pytest.fixture
def dynamodb_store_factory(dynamodb_local: str) -> DynamoDBStoreFactory:
    """Opens a DynamoDBStore on fresh tables of DynamoDB Local; deletes them afterwards.

    Keyword arguments go to :class:`DynamoDBStore`; the default retry policy is instant. The
    store is opened again before the tables are deleted, so a test (or a server it ran) may
    close it.
    """

    @asynccontextmanager
    async def fresh(**options: Any) -> AsyncIterator[DynamoDBStore]:
        prefix = f"t{uuid.uuid4().hex[:12]}-"
        options.setdefault("retry", instant(Backoff()))
        store = DynamoDBStore(
            table_prefix=prefix,
            region="us-east-1",
            endpoint_url=dynamodb_local,
            **options,
        )
        await store.open()
        try:
            await store.create_tables()
            yield store
        finally:
            await store.open()  # a test may have closed it; open() is idempotent
            await schema.delete_tables(store.client, prefix)
            await store.close()

    return fresh


@pytest.fixture(
    params=[
        pytest.param("sqlite"),
        pytest.param("dynamodb", marks=pytest.mark.dynamodb),
    ]
)
async def store(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> AsyncIterator[Store]:
    """An open, empty store of the adapter named by the parameter."""
    if request.param == "sqlite":
        sqlite = SQLiteStore(tmp_path / "store.sqlite3")
        await sqlite.open()
        try:
            yield sqlite
        finally:
            await sqlite.close()
        return
    factory: DynamoDBStoreFactory = request.getfixturevalue("dynamodb_store_factory")
    async with factory() as dynamodb:
        yield dynamodb
