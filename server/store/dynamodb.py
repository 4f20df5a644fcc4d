"""The production store: DynamoDB through aioboto3, one client for the store's lifetime.

Tables are those of :mod:`server.store.schema`, named ``table_prefix`` + suffix. Every call
goes through the store's :class:`~brain.backoff.Backoff` (botocore's own retries
are switched off, so there is one bound, not two multiplied); see
:mod:`server.store.dynamodb_requests` for what is retried and why.

Reads that a write decides on (state, usage budget) and reads of frames just acked are
strongly consistent. Frame writes are ``BatchWriteItem`` puts: a resent frame overwrites its
item with the same content, so a resend is idempotent. Expired frames stay in the table until
DynamoDB's TTL removes them (up to a few days later); reads filter them out.

A ``put_state`` retried after a lost answer may report :class:`~server.errors.VersionConflict`
although the first try landed; the caller re-reads, finds its own state, and moves on.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from contextlib import AsyncExitStack, aclosing
from typing import TYPE_CHECKING, Any

import aioboto3
from botocore.config import Config
from botocore.exceptions import ClientError

from brain.backoff import Backoff
from brain.model import Frame
from server.errors import FramesNotDurable, StoreError, VersionConflict
from server.store import codec, schema
from server.store import dynamodb_items as items
from server.store.base import AvatarCacheEntry, FrameRow, Usage, UserState
from server.store.dynamodb_hops import DynamoDBHops
from server.store.dynamodb_requests import BatchTable, call, items_of_pages, write_batch
from server.store.dynamodb_sagas import DynamoDBSagas

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb.client import DynamoDBClient
    from types_aiobotocore_dynamodb.type_defs import WriteRequestTypeDef

_MAX_TS = 10**13 - 1
"""The largest ts a 13-digit sort key holds (the year 2286)."""


class DynamoDBStore(DynamoDBSagas, DynamoDBHops):
    """The :class:`~server.store.base.Store` in the DynamoDB tables of ``table_prefix``.

    ``endpoint_url`` points at DynamoDB Local in tests; ``max_pool_connections`` bounds the
    client's HTTP pool. Every method but :meth:`open` and :meth:`close` raises
    :class:`~server.errors.StoreError` when the store is not open or DynamoDB fails.
    """

    def __init__(
        self,
        *,
        table_prefix: str,
        region: str,
        endpoint_url: str | None = None,
        max_pool_connections: int = 64,
        frame_retention_days: int = 30,
        retry: Backoff | None = None,
    ) -> None:
        self._prefix = table_prefix
        self._region = region
        self._endpoint_url = endpoint_url
        self._max_pool_connections = max_pool_connections
        self._retention_days = frame_retention_days
        self._retry = retry or Backoff()
        self._stack: AsyncExitStack | None = None
        self._client: DynamoDBClient | None = None
        self._frames = BatchTable(schema.FRAMES.name(table_prefix), "user_id", "sk")
        self._usage = BatchTable(schema.USAGE.name(table_prefix), "user_id", "day")
        self._state_table = schema.USER_STATE.name(table_prefix)
        self._avatar_table = schema.AVATAR_CACHE.name(table_prefix)
        self._saga_table = schema.AVATAR_SAGAS.name(table_prefix)
        self._letters = BatchTable(
            schema.AVATAR_DEAD_LETTERS.name(table_prefix), "user_id", "letter_key"
        )
        self._seen = BatchTable(schema.DEVICE_SEEN.name(table_prefix), "user_id", "device")
        self._commands = BatchTable(schema.COMMANDS.name(table_prefix), "user_id", "command_id")

    async def open(self) -> None:
        """Open the client (tables are not created: see :meth:`create_tables`). Idempotent."""
        if self._client is not None:
            return
        config = Config(
            max_pool_connections=self._max_pool_connections,
            retries={"total_max_attempts": 1},  # the store's Backoff is the only bound
            connect_timeout=5,
            read_timeout=20,
        )
        stack = AsyncExitStack()
        session = aioboto3.Session(region_name=self._region)
        self._client = await stack.enter_async_context(
            session.client("dynamodb", endpoint_url=self._endpoint_url, config=config)
        )
        self._stack = stack

    async def close(self) -> None:
        """Close the client and its connections. Idempotent."""
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    @property
    def table_prefix(self) -> str:
        """The prefix of this store's table names."""
        return self._prefix

    @property
    def client(self) -> DynamoDBClient:
        """The open client (for admin tools and fault-injection hooks in tests).

        Raises :class:`~server.errors.StoreError` when the store is not open.
        """
        if self._client is None:
            raise StoreError(f"DynamoDB store {self._prefix!r} is not open")
        return self._client

    async def create_tables(self) -> list[str]:
        """Create the missing tables of this store's prefix; return the names created.

        See :func:`server.store.schema.create_tables`, whose errors it raises.
        """
        return await schema.create_tables(self.client, self._prefix)

    async def ping(self) -> None:
        """Raise :class:`~server.errors.StoreError` unless the state table answers."""
        client = self.client
        await call(
            "DescribeTable",
            lambda: client.describe_table(TableName=self._state_table),
            self._retry,
        )

    async def put_frames(self, rows: Sequence[FrameRow]) -> None:
        """Write the rows with BatchWriteItem, retrying unprocessed and throttled items.

        Raises :class:`~server.errors.FramesNotDurable` with the indexes (into ``rows``) of
        the rows still unwritten when the retry policy is spent; the others are durable.
        """
        indexes: dict[items.ItemKey, list[int]] = {}
        requests: list[WriteRequestTypeDef] = []
        for index, (user_id, frame) in enumerate(rows):
            key = (user_id, frame.key)
            if key in indexes:
                # BatchWriteItem refuses a key twice in one request; one write serves both.
                indexes[key].append(index)
                continue
            indexes[key] = [index]
            item = items.frame_item(user_id, frame, self._retention_days)
            requests.append({"PutRequest": {"Item": item}})
        if not requests:
            return
        failed = await write_batch(self.client, self._frames, requests, self._retry)
        if failed:
            failed_indexes = frozenset(index for key in failed for index in indexes[key])
            raise FramesNotDurable(failed_indexes, next(iter(failed.values())))

    async def frames_between(
        self, user_id: str, start_ms: int, end_ms: int, *, now_ms: int
    ) -> list[Frame]:
        """The user's unexpired frames with ``start_ms <= ts < end_ms``, oldest first."""
        start_ms, end_ms = max(start_ms, 0), min(end_ms, _MAX_TS + 1)
        if end_ms <= start_ms:
            return []
        # Keys are "ts#device#seq" with a 13-digit ts: "#" sorts before "$", so the range
        # below holds every key of start_ms .. end_ms - 1 and none of end_ms.
        found = self._query(
            TableName=self._frames.name,
            KeyConditionExpression="#pk = :user AND #sk BETWEEN :low AND :high",
            FilterExpression="#expires >= :now",
            ExpressionAttributeNames={"#pk": "user_id", "#sk": "sk", "#expires": "expires_at"},
            ExpressionAttributeValues={
                ":user": {"S": user_id},
                ":low": {"S": f"{start_ms:013d}#"},
                ":high": {"S": f"{end_ms - 1:013d}$"},
                ":now": {"N": str(now_ms // 1000)},
            },
            ConsistentRead=True,
        )
        return [items.frame_of(item) async for item in found]

    async def get_state(self, user_id: str) -> UserState | None:
        """The user's state (strongly consistent read), or ``None``."""
        client = self.client
        response = await call(
            "GetItem user_state",
            lambda: client.get_item(
                TableName=self._state_table,
                Key={"user_id": {"S": user_id}},
                ConsistentRead=True,
            ),
            self._retry,
        )
        item = response.get("Item")
        return None if item is None else items.state_of(item)

    async def put_state(self, state: UserState, expected_version: int) -> None:
        """PutItem conditional on the stored version being ``expected_version`` (0: no item).

        Raises :class:`~server.errors.VersionConflict` naming the version found (``None``
        when there is no item).
        """
        client = self.client
        if expected_version == 0:
            # A row with version 0 (a profile saved before any state) also counts as "none
            # yet", as it does in the SQLite store.
            condition = "attribute_not_exists(#pk) OR #version = :expected"
            names = {"#pk": "user_id", "#version": "version"}
        else:
            condition = "#version = :expected"
            names = {"#version": "version"}
        try:
            await call(
                "PutItem user_state",
                lambda: client.put_item(
                    TableName=self._state_table,
                    Item=items.state_item(state),
                    ConditionExpression=condition,
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues={":expected": {"N": str(expected_version)}},
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                ),
                self._retry,
                passthrough=frozenset({"ConditionalCheckFailedException"}),
            )
        except ClientError as error:
            old: Any = error.response.get("Item")
            found = None if not old else int(old["version"]["N"])
            raise VersionConflict(state.user_id, expected_version, found) from error

    async def users_with_avatar_status(self, status: str, limit: int = 1000) -> list[str]:
        """Up to ``limit`` ids of users whose ``avatar_status`` is ``status``.

        An admin path (replaying failed avatar sagas): it Scans the whole state table, which
        reads every item. Call it rarely, never per request.
        """
        found: list[str] = []
        scan = self._scan(
            TableName=self._state_table,
            FilterExpression="#status = :status",
            ProjectionExpression="#pk",
            ExpressionAttributeNames={"#status": "avatar_status", "#pk": "user_id"},
            ExpressionAttributeValues={":status": {"S": status}},
        )
        async with aclosing(scan):
            async for item in scan:
                if len(found) >= limit:
                    break
                found.append(item["user_id"]["S"])
        return found

    async def get_avatar(self, cache_hash: str) -> AvatarCacheEntry | None:
        """The cached avatar for ``cache_hash``, or ``None``."""
        client = self.client
        response = await call(
            "GetItem avatar_cache",
            lambda: client.get_item(
                TableName=self._avatar_table, Key={"cache_hash": {"S": cache_hash}}
            ),
            self._retry,
        )
        item = response.get("Item")
        return None if item is None else items.avatar_of(item)

    async def put_avatar(self, entry: AvatarCacheEntry) -> None:
        """Store ``entry``, replacing an earlier entry for the same hash."""
        client = self.client
        await call(
            "PutItem avatar_cache",
            lambda: client.put_item(TableName=self._avatar_table, Item=items.avatar_item(entry)),
            self._retry,
        )

    async def add_usage(
        self,
        user_id: str,
        day: str,
        *,
        calls: int,
        input_tokens: int,
        output_tokens: int,
        cost_usd: float,
    ) -> Usage:
        """UpdateItem ``ADD`` to the user's usage of ``day``; return the new totals.

        Not idempotent, so only throttling (a request that was not applied) is retried.
        """
        client = self.client
        response = await call(
            "UpdateItem usage",
            lambda: client.update_item(
                TableName=self._usage.name,
                Key={"user_id": {"S": user_id}, "day": {"S": day}},
                UpdateExpression="ADD #calls :calls, #in :in, #out :out, #cost :cost",
                ExpressionAttributeNames={
                    "#calls": "calls",
                    "#in": "input_tokens",
                    "#out": "output_tokens",
                    "#cost": "cost_usd",
                },
                ExpressionAttributeValues={
                    ":calls": {"N": str(calls)},
                    ":in": {"N": str(input_tokens)},
                    ":out": {"N": str(output_tokens)},
                    ":cost": {"N": items.cost_number(cost_usd)},
                },
                ReturnValues="ALL_NEW",
            ),
            self._retry,
            idempotent=False,
        )
        return items.usage_of(user_id, day, response.get("Attributes", {}))

    async def get_usage(self, user_id: str, day: str) -> Usage:
        """The user's usage on ``day`` (strongly consistent), zeros when there is none."""
        client = self.client
        response = await call(
            "GetItem usage",
            lambda: client.get_item(
                TableName=self._usage.name,
                Key={"user_id": {"S": user_id}, "day": {"S": day}},
                ConsistentRead=True,
            ),
            self._retry,
        )
        return items.usage_of(user_id, day, response.get("Item", {}))

    async def export_user(self, user_id: str, *, now_ms: int) -> dict[str, Any]:
        """Everything stored about the user (unexpired frames), as JSON-ready data."""
        state = await self.get_state(user_id)
        frames = self._query(
            TableName=self._frames.name,
            KeyConditionExpression="#pk = :user",
            FilterExpression="#expires >= :now",
            ExpressionAttributeNames={"#pk": "user_id", "#expires": "expires_at"},
            ExpressionAttributeValues={
                ":user": {"S": user_id},
                ":now": {"N": str(now_ms // 1000)},
            },
            ConsistentRead=True,
        )
        usage = self._query(
            TableName=self._usage.name,
            KeyConditionExpression="#pk = :user",
            ExpressionAttributeNames={"#pk": "user_id"},
            ExpressionAttributeValues={":user": {"S": user_id}},
            ConsistentRead=True,
        )
        return codec.export_document(
            user_id,
            state,
            [items.frame_of(item) async for item in frames],
            [items.usage_of(user_id, item["day"]["S"], item) async for item in usage],
        )

    async def delete_user(self, user_id: str) -> int:
        """Delete the user's frames (expired ones too), state and usage; return the count.

        Raises :class:`~server.errors.StoreError` when some items could not be deleted
        (calling again finishes the job: deletes are idempotent).
        """
        deleted = 0
        for table in (self._frames, self._usage, self._letters, self._seen, self._commands):
            assert table.sort_key is not None  # these tables have one; mypy needs to know
            keys = self._query(
                TableName=table.name,
                KeyConditionExpression="#pk = :user",
                ProjectionExpression="#pk, #sk",
                ExpressionAttributeNames={"#pk": table.partition_key, "#sk": table.sort_key},
                ExpressionAttributeValues={":user": {"S": user_id}},
                ConsistentRead=True,
            )
            requests: list[WriteRequestTypeDef] = [
                {"DeleteRequest": {"Key": key}} async for key in keys
            ]
            failed = await write_batch(self.client, table, requests, self._retry)
            if failed:
                raise StoreError(
                    f"could not delete {len(failed)} item(s) of user {user_id!r} from"
                    f" {table.name}: {next(iter(failed.values()))}"
                )
            deleted += len(requests)
        client = self.client
        response = await call(
            "DeleteItem user_state",
            lambda: client.delete_item(
                TableName=self._state_table,
                Key={"user_id": {"S": user_id}},
                ReturnValues="ALL_OLD",
            ),
            self._retry,
        )
        saga = await call(
            "DeleteItem avatar_sagas",
            lambda: client.delete_item(
                TableName=self._saga_table,
                Key={"user_id": {"S": user_id}},
                ReturnValues="ALL_OLD",
            ),
            self._retry,
        )
        found = [response, saga]
        return deleted + sum(1 for answer in found if answer.get("Attributes"))

    def _query(self, **request: Any) -> AsyncGenerator[dict[str, Any], None]:
        """The items of a Query, page after page."""
        return items_of_pages(self.client.query, request, self._retry)

    def _scan(self, **request: Any) -> AsyncGenerator[dict[str, Any], None]:
        """The items of a Scan, page after page."""
        return items_of_pages(self.client.scan, request, self._retry)
