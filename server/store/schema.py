"""The DynamoDB tables, defined once, and the idempotent :func:`create_tables`.

:data:`TABLES` is plain data on purpose: the adapter reads table names from it, the tests
and ``companion tables create`` create tables from it, and a CloudFormation generator can
turn it into ``AWS::DynamoDB::Table`` resources without importing anything else. All
tables bill on demand. A table's full name is the environment's prefix followed by its
suffix, verbatim (``"prod-"`` + ``"frames"``), so the prefix carries its own separator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb.client import DynamoDBClient
    from types_aiobotocore_dynamodb.type_defs import KeySchemaElementTypeDef

KeyType = Literal["S", "N", "B"]


@dataclass(frozen=True, slots=True)
class KeyAttribute:
    """One key attribute of a table: its name and DynamoDB scalar type."""

    name: str
    type: KeyType = "S"


@dataclass(frozen=True, slots=True)
class TableSpec:
    """A table: name suffix, partition key, optional sort key and TTL attribute."""

    suffix: str
    partition_key: KeyAttribute
    sort_key: KeyAttribute | None = None
    ttl_attribute: str | None = None
    billing_mode: Literal["PAY_PER_REQUEST"] = "PAY_PER_REQUEST"

    def name(self, prefix: str) -> str:
        """The table's full name in the environment ``prefix``."""
        return f"{prefix}{self.suffix}"

    @property
    def keys(self) -> tuple[KeyAttribute, ...]:
        """The key attributes, partition key first."""
        return (
            (self.partition_key,) if self.sort_key is None else (self.partition_key, self.sort_key)
        )


FRAMES = TableSpec(
    suffix="frames",
    partition_key=KeyAttribute("user_id"),
    sort_key=KeyAttribute("sk"),  # Frame.key: ts#device#seq, sorts by time
    ttl_attribute="expires_at",
)
USER_STATE = TableSpec(suffix="user_state", partition_key=KeyAttribute("user_id"))
AVATAR_CACHE = TableSpec(suffix="avatar_cache", partition_key=KeyAttribute("cache_hash"))
USAGE = TableSpec(
    suffix="usage",
    partition_key=KeyAttribute("user_id"),
    sort_key=KeyAttribute("day"),  # YYYY-MM-DD, UTC
)

AVATAR_SAGAS = TableSpec(suffix="avatar_sagas", partition_key=KeyAttribute("user_id"))
AVATAR_DEAD_LETTERS = TableSpec(
    suffix="avatar_dead_letters",
    partition_key=KeyAttribute("user_id"),
    sort_key=KeyAttribute("letter_key"),  # DeadLetter.key: failed_at#saga_id
)

HISTORY = TableSpec(
    suffix="history",
    partition_key=KeyAttribute("user_id"),
    sort_key=KeyAttribute("sk"),  # the version, 12 digits zero-padded: sorts by version
    ttl_attribute="expires_at",
)
DEVICE_SEEN = TableSpec(
    suffix="device_seen",
    partition_key=KeyAttribute("user_id"),
    sort_key=KeyAttribute("device"),  # the device's own name: one small item per device
)
COMMANDS = TableSpec(
    suffix="commands",
    partition_key=KeyAttribute("user_id"),
    sort_key=KeyAttribute("command_id"),  # deterministic per (user, version, action)
    ttl_attribute="purge_at",
)

TABLES: tuple[TableSpec, ...] = (
    FRAMES,
    USER_STATE,
    AVATAR_CACHE,
    USAGE,
    AVATAR_SAGAS,
    AVATAR_DEAD_LETTERS,
    HISTORY,
    DEVICE_SEEN,
    COMMANDS,
)
"""Every table the store uses."""

WAIT_DELAY_SECONDS = 2
"""How often :func:`create_tables` asks whether a new table is ACTIVE."""

WAIT_MAX_ATTEMPTS = 90
"""How often it asks before giving up (three minutes; on-demand tables take seconds)."""


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


async def create_tables(
    client: DynamoDBClient, prefix: str, tables: tuple[TableSpec, ...] = TABLES
) -> list[str]:
    """Create the tables of environment ``prefix`` that do not exist yet; return their names.

    Idempotent: a table that exists already is left as it is (and not in the result), but
    the call still waits until every table is ACTIVE and TTL is enabled where the spec
    asks for it, so a half-finished earlier run is completed. Raises
    :class:`botocore.exceptions.ClientError` for anything but "already exists", and
    :class:`botocore.exceptions.WaiterError` when a table does not become ACTIVE in time.
    """
    created: list[str] = []
    for spec in tables:
        name = spec.name(prefix)
        key_schema: list[KeySchemaElementTypeDef] = [
            {"AttributeName": spec.partition_key.name, "KeyType": "HASH"}
        ]
        if spec.sort_key is not None:
            key_schema.append({"AttributeName": spec.sort_key.name, "KeyType": "RANGE"})
        try:
            await client.create_table(
                TableName=name,
                KeySchema=key_schema,
                AttributeDefinitions=[
                    {"AttributeName": key.name, "AttributeType": key.type} for key in spec.keys
                ],
                BillingMode=spec.billing_mode,
            )
        except ClientError as error:
            if _error_code(error) != "ResourceInUseException":
                raise
        else:
            created.append(name)
    waiter = client.get_waiter("table_exists")
    for spec in tables:
        name = spec.name(prefix)
        # The waiter's first DescribeTable is immediate; it only sleeps when not ACTIVE yet.
        await waiter.wait(
            TableName=name,
            WaiterConfig={"Delay": WAIT_DELAY_SECONDS, "MaxAttempts": WAIT_MAX_ATTEMPTS},
        )
        if spec.ttl_attribute is not None:
            await _enable_ttl(client, name, spec.ttl_attribute)
    return created


async def _enable_ttl(client: DynamoDBClient, table: str, attribute: str) -> None:
    """Turn TTL on for ``table`` unless it is on (or turning on) already."""
    described = await client.describe_time_to_live(TableName=table)
    status = described.get("TimeToLiveDescription", {}).get("TimeToLiveStatus")
    if status in ("ENABLED", "ENABLING"):
        return
    await client.update_time_to_live(
        TableName=table,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": attribute},
    )


async def delete_tables(
    client: DynamoDBClient, prefix: str, tables: tuple[TableSpec, ...] = TABLES
) -> list[str]:
    """Delete the tables of environment ``prefix`` that exist; return their names.

    Meant for tests and throw-away environments. Raises
    :class:`botocore.exceptions.ClientError` for anything but "not found".
    """
    deleted: list[str] = []
    for spec in tables:
        name = spec.name(prefix)
        try:
            await client.delete_table(TableName=name)
        except ClientError as error:
            if _error_code(error) != "ResourceNotFoundException":
                raise
        else:
            deleted.append(name)
    return deleted
