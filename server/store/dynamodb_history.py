"""The decision history in DynamoDB: the ``history`` table of :data:`server.store.schema.HISTORY`.

One item per committed version: partition key ``user_id``, sort key ``sk`` (the version,
12 digits zero-padded, so keys sort by version), ``version``, ``at`` (commit time, epoch
ms), ``expires_at`` (DynamoDB's TTL attribute) and ``payload`` (the event's JSON, as
:mod:`server.store.history_codec` writes it for both adapters).

**Recorded once, never after an erase.** :func:`put_event` is a ``PutItem`` conditional on
the key being new, so a retry or a second node records nothing twice. DynamoDB cannot make
that put conditional on the ``user_state`` item too without a transaction, and a
transaction holding the state item would make the next commit of the same user fail with
``TransactionConflict``; so the put is followed by a strongly consistent read of the
state, and an event whose user is gone (erased between the commit and the put) is deleted
again. The erase deletes the state before the history (``DELETE /v1/users/{id}``), so either
the erase sees the event and deletes it, or the read after the put sees no state.
"""

from __future__ import annotations

from contextlib import aclosing
from typing import TYPE_CHECKING, Any, Final

from botocore.exceptions import ClientError

from brain.backoff import Backoff
from server.errors import StoreError
from server.store import history_codec
from server.store.base import HistoryEvent, HistoryQuery
from server.store.dynamodb_items import is_tombstone
from server.store.dynamodb_requests import BatchTable, call, items_of_pages, write_batch

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb.client import DynamoDBClient
    from types_aiobotocore_dynamodb.type_defs import AttributeValueTypeDef, WriteRequestTypeDef

MAX_VERSION: Final = 10**12 - 1
"""The largest version a 12-digit sort key holds."""


def sort_key(version: int) -> str:
    """The sort key of a version: 12 digits, zero-padded."""
    return f"{min(max(version, 0), MAX_VERSION):012d}"


def event_item(event: HistoryEvent, retention_days: int) -> dict[str, AttributeValueTypeDef]:
    """The ``history`` item of an event."""
    return {
        "user_id": {"S": event.user_id},
        "sk": {"S": sort_key(event.version)},
        "version": {"N": str(event.version)},
        "at": {"N": str(event.at)},
        "expires_at": {"N": str(history_codec.expires_at(event, retention_days))},
        "payload": {"S": history_codec.encode_event(event).decode()},
    }


async def put_event(
    client: DynamoDBClient,
    table: str,
    state_table: str,
    event: HistoryEvent,
    *,
    retention_days: int,
    retry: Backoff,
) -> bool:
    """Record ``event`` once, and only while its user's state is at its version or later;
    return whether this call recorded it. Raises :class:`~server.errors.StoreError`."""
    key: dict[str, AttributeValueTypeDef] = {
        "user_id": {"S": event.user_id},
        "sk": {"S": sort_key(event.version)},
    }
    try:
        await call(
            "PutItem history",
            lambda: client.put_item(
                TableName=table,
                Item=event_item(event, retention_days),
                ConditionExpression="attribute_not_exists(#pk)",
                ExpressionAttributeNames={"#pk": "user_id"},
            ),
            retry,
            passthrough=frozenset({"ConditionalCheckFailedException"}),
        )
    except ClientError:
        return False  # recorded already (a retry, or another node)
    state = await call(
        "GetItem user_state",
        lambda: client.get_item(
            TableName=state_table,
            Key={"user_id": {"S": event.user_id}},
            ProjectionExpression="#version, #erased",
            ExpressionAttributeNames={"#version": "version", "#erased": "erased"},
            ConsistentRead=True,
        ),
        retry,
    )
    found: Any = state.get("Item")
    # An erase leaves a tombstone at the erased version: it keeps no event either.
    if found is None or is_tombstone(found) or int(found["version"]["N"]) < event.version:
        await call(
            "DeleteItem history",
            lambda: client.delete_item(TableName=table, Key=key),
            retry,
        )
        return False
    return True


async def query_events(
    client: DynamoDBClient,
    table: str,
    user_id: str,
    query: HistoryQuery,
    *,
    now_ms: int,
    retry: Backoff,
) -> list[HistoryEvent]:
    """The user's unexpired events that ``query`` selects, newest first.

    Version bounds are a key condition; time bounds and expiry a filter, read page by page
    (each page at most ``limit`` items) until ``limit`` events are found or none are left.
    """
    low = 0 if query.since_version is None else query.since_version + 1
    high = MAX_VERSION if query.before_version is None else query.before_version - 1
    if high < low or query.limit <= 0:
        return []
    filters = ["#expires >= :now"]
    values: dict[str, AttributeValueTypeDef] = {
        ":user": {"S": user_id},
        ":low": {"S": sort_key(low)},
        ":high": {"S": sort_key(high)},
        ":now": {"N": str(now_ms // 1000)},
    }
    names = {"#pk": "user_id", "#sk": "sk", "#expires": "expires_at"}
    if query.before_ms is not None:
        filters.append("#at < :before")
        values[":before"] = {"N": str(query.before_ms)}
    if query.since_ms is not None:
        filters.append("#at >= :since")
        values[":since"] = {"N": str(query.since_ms)}
    if len(filters) > 1:
        names["#at"] = "at"
    pages = items_of_pages(
        client.query,
        {
            "TableName": table,
            "KeyConditionExpression": "#pk = :user AND #sk BETWEEN :low AND :high",
            "FilterExpression": " AND ".join(filters),
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
            "ScanIndexForward": False,
            "Limit": query.limit,
            "ConsistentRead": True,
        },
        retry,
    )
    events: list[HistoryEvent] = []
    async with aclosing(pages):
        async for item in pages:
            events.append(history_codec.decode_event(user_id, item["payload"]["S"]))
            if len(events) >= query.limit:
                break
    return events


async def delete_events(client: DynamoDBClient, table: str, user_id: str, *, retry: Backoff) -> int:
    """Delete every event of the user (expired ones too); return how many.

    Raises :class:`~server.errors.StoreError` when some could not be deleted (calling
    again finishes the job).
    """
    batch = BatchTable(table, "user_id", "sk")
    keys = items_of_pages(
        client.query,
        {
            "TableName": table,
            "KeyConditionExpression": "#pk = :user",
            "ProjectionExpression": "#pk, #sk",
            "ExpressionAttributeNames": {"#pk": "user_id", "#sk": "sk"},
            "ExpressionAttributeValues": {":user": {"S": user_id}},
            "ConsistentRead": True,
        },
        retry,
    )
    requests: list[WriteRequestTypeDef] = [{"DeleteRequest": {"Key": key}} async for key in keys]
    failed = await write_batch(client, batch, requests, retry)
    if failed:
        raise StoreError(
            f"could not delete {len(failed)} history item(s) of user {user_id!r}:"
            f" {next(iter(failed.values()))}"
        )
    return len(requests)
