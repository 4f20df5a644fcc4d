"""``create_tables`` against DynamoDB Local: idempotent, the specified tables, TTL on frames."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from server.store import schema
from server.store.dynamodb import DynamoDBStore

pytestmark = pytest.mark.dynamodb


@pytest.fixture
async def bare_store(dynamodb_local: str) -> AsyncIterator[DynamoDBStore]:
    """An open store on a fresh prefix whose tables do not exist yet (deleted afterwards)."""
    prefix = f"c{uuid.uuid4().hex[:12]}-"
    store = DynamoDBStore(table_prefix=prefix, region="us-east-1", endpoint_url=dynamodb_local)
    await store.open()
    try:
        yield store
    finally:
        await schema.delete_tables(store.client, prefix)
        await store.close()


def names(prefix: str) -> list[str]:
    return [spec.name(prefix) for spec in schema.TABLES]


async def test_create_tables_creates_each_table_once(bare_store: DynamoDBStore) -> None:
    store_prefix = bare_store.table_prefix

    first = await bare_store.create_tables()
    second = await bare_store.create_tables()

    assert first == names(store_prefix)
    assert second == []
    listed = await bare_store.client.list_tables()
    assert set(names(store_prefix)) <= set(listed["TableNames"])


async def test_tables_have_the_specified_keys_and_on_demand_billing(
    bare_store: DynamoDBStore,
) -> None:
    await bare_store.create_tables()

    for spec in schema.TABLES:
        described = await bare_store.client.describe_table(
            TableName=spec.name(bare_store.table_prefix)
        )
        table = described["Table"]
        assert table["TableStatus"] == "ACTIVE"
        assert [(k["AttributeName"], k["KeyType"]) for k in table["KeySchema"]] == [
            (key.name, "HASH" if i == 0 else "RANGE") for i, key in enumerate(spec.keys)
        ]
        defined = table["AttributeDefinitions"]
        attributes = {(a["AttributeName"], a["AttributeType"]) for a in defined}
        assert attributes == {(key.name, key.type) for key in spec.keys}
        assert table.get("BillingModeSummary", {}).get("BillingMode") == "PAY_PER_REQUEST"


async def test_ttl_is_enabled_on_frames_history_and_commands_only(
    bare_store: DynamoDBStore,
) -> None:
    await bare_store.create_tables()
    await bare_store.create_tables()  # enabling twice would be an error if not skipped

    for spec in schema.TABLES:
        described = await bare_store.client.describe_time_to_live(
            TableName=spec.name(bare_store.table_prefix)
        )
        ttl = described["TimeToLiveDescription"]
        if spec in (schema.FRAMES, schema.HISTORY):
            assert ttl["TimeToLiveStatus"] == "ENABLED"
            assert ttl["AttributeName"] == "expires_at"
        elif spec is schema.COMMANDS:
            assert ttl["TimeToLiveStatus"] == "ENABLED"
            assert ttl["AttributeName"] == "purge_at"
        else:
            assert ttl["TimeToLiveStatus"] == "DISABLED"
