"""The production store: DynamoDB through aioboto3, one client for the store's lifetime.

Tables are those of :mod:`server.store.schema`, named ``table_prefix`` + suffix. Every call
goes through the store's :class:`~brain.backoff.Backoff` (botocore's own retries
are switched off, so there is one bound, not two multiplied); see
:mod:`server.store.dynamodb_requests` for what is retried and why.

Reads that a write decides on (state, usage budget) and reads of frames just acked are
strongly consistent. Frames are packed one item per (user, device, minute) and merged by
conditional writes (:mod:`server.store.dynamodb_frames`): a resent frame is found in its
bucket and never stored twice. Expired frames stay in the table until DynamoDB's TTL removes
them (up to a few days later); reads filter them out.

A ``put_state`` retried after a lost answer may report :class:`~server.errors.VersionConflict`
although the first try landed; the caller re-reads, finds its own state, and moves on.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import AsyncExitStack, aclosing
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import aioboto3
from botocore.config import Config
from botocore.exceptions import ClientError

from brain.backoff import Backoff
from brain.model import Frame, Profile
from server.errors import StoreError, VersionConflict
from server.store import codec, dynamodb_history as history, dynamodb_items as items, schema
from server.store.base import (
    SERVICE_COSTS,
    AvatarCacheEntry,
    FrameRow,
    HistoryEvent,
    HistoryQuery,
    Tombstone,
    Usage,
    UserState,
)
from server.store.dynamodb_frames import DynamoDBFrames
from server.store.dynamodb_hops import DynamoDBHops
from server.store.dynamodb_requests import BatchTable, call, items_of_pages, write_batch
from server.store.dynamodb_sagas import DynamoDBSagas

ERASE_ATTEMPTS = 5
"""How often an erase tries to replace a state that keeps changing under it (each try is
two conditional writes; commits racing an erase are rare, and refused after it)."""

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb.client import DynamoDBClient
    from types_aiobotocore_dynamodb.type_defs import WriteRequestTypeDef


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
        history_retention_days: int = 90,
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
        self._frame_table = BatchTable(schema.FRAMES.name(table_prefix), "user_id", "sk")
        self._frames = DynamoDBFrames(
            lambda: self.client,
            self._frame_table.name,
            retention_days=frame_retention_days,
            retry=self._retry,
            query=self._query,
        )
        self._usage = BatchTable(schema.USAGE.name(table_prefix), "user_id", "day")
        self._state_table = schema.USER_STATE.name(table_prefix)
        self._avatar_table = schema.AVATAR_CACHE.name(table_prefix)
        self._saga_table = schema.AVATAR_SAGAS.name(table_prefix)
        self._letters = BatchTable(
            schema.AVATAR_DEAD_LETTERS.name(table_prefix), "user_id", "letter_key"
        )
        self._history_table = schema.HISTORY.name(table_prefix)
        self._history_retention_days = history_retention_days
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
        """Merge the rows into their minute buckets (:mod:`server.store.dynamodb_frames`).

        Raises :class:`~server.errors.FramesNotDurable` with the indexes (into ``rows``) of
        the rows still unwritten when the retry policy is spent; the others are durable.
        """
        await self._frames.put(rows)

    async def frames_between(
        self, user_id: str, start_ms: int, end_ms: int, *, now_ms: int
    ) -> list[Frame]:
        """The user's unexpired frames with ``start_ms <= ts < end_ms``, oldest first."""
        return await self._frames.between(user_id, start_ms, end_ms, now_ms=now_ms)

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
        return None if item is None or items.is_tombstone(item) else items.state_of(item)

    async def tombstone(self, user_id: str) -> Tombstone:
        """The user's tombstone (``Tombstone()`` when never erased); a consistent read."""
        client = self.client
        response = await call(
            "GetItem user_state tombstone",
            lambda: client.get_item(
                TableName=self._state_table,
                Key={"user_id": {"S": user_id}},
                ProjectionExpression="#version, #epoch, #erased, #updated_at",
                ExpressionAttributeNames={
                    "#version": "version",
                    "#epoch": "epoch",
                    "#erased": "erased",
                    "#updated_at": "updated_at",
                },
                ConsistentRead=True,
            ),
            self._retry,
        )
        item = response.get("Item")
        if item is None or not items.is_tombstone(item):
            return Tombstone()
        erased_at = int(item["updated_at"]["N"]) if "updated_at" in item else 0
        return Tombstone(int(item["version"]["N"]), items.epoch_of(item), erased_at)

    async def put_state(
        self, state: UserState, expected_version: int, *, expected_profile: Profile | None = None
    ) -> None:
        """PutItem conditional on the stored version being ``expected_version`` (0: no item),
        the stored erase epoch being ``state.epoch`` and (when given, on a live item) the
        stored profile being ``expected_profile``; the item it writes replaces a tombstone
        (it has no ``erased`` attribute).

        Raises :class:`~server.errors.VersionConflict` naming the version found (``None``
        when there is no item).
        """
        profile = None if expected_profile is None else items.profile_attribute(expected_profile)
        old = await self._put_state(state, expected_version, profile)
        if old is None:
            return
        if (
            expected_profile is not None
            and expected_version
            and "profile" in old
            and not items.is_tombstone(old)
            and int(old["version"]["N"]) == expected_version
            and items.epoch_of(old) == state.epoch
            and items.same_profile(old, expected_profile)
        ):
            # The same profile, spelled otherwise (an item from an older release): the
            # condition names the stored map itself.
            old = await self._put_state(state, expected_version, old["profile"])
            if old is None:
                return
        found = None if not old else int(old["version"]["N"])
        raise VersionConflict(state.user_id, expected_version, found)

    async def _put_state(
        self, state: UserState, expected_version: int, profile: Any
    ) -> dict[str, Any] | None:
        """One conditional PutItem (``profile``: the map the stored one must equal, or
        ``None``); the item found when the condition failed (``{}``: none), else ``None``."""
        client = self.client
        # An item from before erase epochs has no epoch attribute: it is epoch 0.
        same_epoch = "(attribute_not_exists(#epoch) OR #epoch = :epoch)"
        values: dict[str, Any] = {
            ":expected": {"N": str(expected_version)},
            ":epoch": {"N": str(state.epoch)},
        }
        if expected_version == 0:
            # A row with version 0 (a tombstone of a user erased before any state, or a
            # profile saved before any state) also counts as "none yet", as in SQLite.
            condition = f"(attribute_not_exists(#pk) OR #version = :expected) AND {same_epoch}"
            names = {"#pk": "user_id", "#version": "version", "#epoch": "epoch"}
        else:
            condition = f"#version = :expected AND {same_epoch}"
            names = {"#version": "version", "#epoch": "epoch"}
            if profile is not None:
                # A tombstone has no profile: only a live item's is compared.
                condition += " AND (attribute_exists(#erased) OR #profile = :profile)"
                names |= {"#erased": "erased", "#profile": "profile"}
                values[":profile"] = profile
        try:
            await call(
                "PutItem user_state",
                lambda: client.put_item(
                    TableName=self._state_table,
                    Item=items.state_item(state),
                    ConditionExpression=condition,
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues=values,
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                ),
                self._retry,
                passthrough=frozenset({"ConditionalCheckFailedException"}),
            )
        except ClientError as error:
            old: dict[str, Any] = error.response.get("Item") or {}  # type: ignore[assignment]
            return old
        return None

    async def users_with_avatar_status(self, status: str, limit: int = 1000) -> list[str]:
        """Up to ``limit`` ids of users whose ``avatar_status`` is ``status``.

        An admin path (replaying failed avatar sagas): it Scans the whole state table, which
        reads every item. Call it rarely, never per request.
        """
        found: list[str] = []
        scan = self._scan(
            TableName=self._state_table,
            FilterExpression="#status = :status AND attribute_not_exists(#erased)",
            ProjectionExpression="#pk",
            ExpressionAttributeNames={
                "#status": "avatar_status",
                "#pk": "user_id",
                "#erased": "erased",
            },
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
        cache_write_tokens: int = 0,
        cache_read_tokens: int = 0,
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
                UpdateExpression=(
                    "ADD #calls :calls, #in :in, #out :out, #cost :cost, #cw :cw, #cr :cr"
                ),
                ExpressionAttributeNames={
                    "#calls": "calls",
                    "#in": "input_tokens",
                    "#out": "output_tokens",
                    "#cost": "cost_usd",
                    "#cw": "cache_write_tokens",
                    "#cr": "cache_read_tokens",
                },
                ExpressionAttributeValues={
                    ":calls": {"N": str(calls)},
                    ":in": {"N": str(input_tokens)},
                    ":out": {"N": str(output_tokens)},
                    ":cost": {"N": items.cost_number(cost_usd)},
                    ":cw": {"N": str(cache_write_tokens)},
                    ":cr": {"N": str(cache_read_tokens)},
                },
                ReturnValues="ALL_NEW",
            ),
            self._retry,
            idempotent=False,
        )
        return items.usage_of(user_id, day, response.get("Attributes", {}))

    async def add_service_costs(self, user_id: str, day: str, costs: Mapping[str, float]) -> None:
        """UpdateItem ``ADD`` to the user's service costs of ``day``; only throttling is
        retried (not idempotent)."""
        unknown = set(costs) - set(SERVICE_COSTS)
        if unknown:
            raise ValueError(f"not a service cost: {sorted(unknown)}")
        names = [name for name in SERVICE_COSTS if name in costs]
        if not names:
            return
        client = self.client
        await call(
            "UpdateItem usage",
            lambda: client.update_item(
                TableName=self._usage.name,
                Key={"user_id": {"S": user_id}, "day": {"S": day}},
                UpdateExpression="ADD " + ", ".join(f"#{n} :{n}" for n in names),
                ExpressionAttributeNames={f"#{n}": n for n in names},
                ExpressionAttributeValues={
                    f":{n}": {"N": items.cost_number(costs[n])} for n in names
                },
            ),
            self._retry,
            idempotent=False,
        )

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
        frames = await self._frames.between(user_id, 0, 10**13, now_ms=now_ms)
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
            frames,
            [items.usage_of(user_id, item["day"]["S"], item) async for item in usage],
        )

    async def delete_user(self, user_id: str, *, at_ms: int | None = None) -> int:
        """Delete the user's frames (expired ones too), usage, saga and dead letters, then
        turn the state item into a tombstone of the next erase epoch (keeping its version)
        stamped ``at_ms`` (``None``: now); return the count (a live state counts one).

        Raises :class:`~server.errors.StoreError` when some items could not be deleted
        (calling again finishes the job: deletes are idempotent).
        """
        deleted = 0
        keyed = await self._frames.keys_and_counts(user_id)
        self._frames.forget_user(user_id)
        frame_keys = [key for key, _ in keyed]
        await self._delete_items(self._frame_table, user_id, frame_keys)
        deleted += sum(count for _, count in keyed)
        for table in (self._usage, self._letters, self._seen, self._commands):
            assert table.sort_key is not None  # these tables have one; mypy needs to know
            found_keys = self._query(
                TableName=table.name,
                KeyConditionExpression="#pk = :user",
                ProjectionExpression="#pk, #sk",
                ExpressionAttributeNames={"#pk": table.partition_key, "#sk": table.sort_key},
                ExpressionAttributeValues={":user": {"S": user_id}},
                ConsistentRead=True,
            )
            keys = [key async for key in found_keys]
            await self._delete_items(table, user_id, keys)
            deleted += len(keys)
        client = self.client
        saga = await call(
            "DeleteItem avatar_sagas",
            lambda: client.delete_item(
                TableName=self._saga_table,
                Key={"user_id": {"S": user_id}},
                ReturnValues="ALL_OLD",
            ),
            self._retry,
        )
        deleted += 1 if saga.get("Attributes") else 0
        erased_at = int(time.time() * 1000) if at_ms is None else at_ms
        return deleted + await self._tombstone(user_id, erased_at)

    async def _tombstone(self, user_id: str, erased_at: int) -> int:
        """Turn the user's state item into a tombstone of the next erase epoch; 1 if it held
        a live state. Last, so that a reader who sees the new epoch finds no frames.

        A live state's tombstone is one version on (the blank state is news to devices that
        saw the erased one); a tombstone's keeps its version. Each is one UpdateItem
        conditional on what it replaces (not a read then a put): ADD raises the epoch
        atomically, whoever erases at once, and a lost race tries the other form.
        """
        for _ in range(ERASE_ATTEMPTS):
            try:
                await self._update_tombstone(user_id, erased_at, live=True)
                return 1
            except ClientError:
                pass  # no live state (now): a tombstone or nothing
            try:
                await self._update_tombstone(user_id, erased_at, live=False)
                return 0
            except ClientError:
                pass  # a state was committed in between: erase it as a live one
        raise StoreError(f"could not erase the state of user {user_id!r}: it kept changing")

    async def _update_tombstone(self, user_id: str, erased_at: int, *, live: bool) -> None:
        """One tombstone UpdateItem: of a live state (``live``: version + 1), or of a
        tombstone or no item (version kept). Raises ``ClientError``
        (ConditionalCheckFailedException) when the item is not of that kind."""
        tombstone = items.state_item(replace(UserState.initial(user_id), updated_at=erased_at))
        fields = [name for name in tombstone if name not in ("user_id", "epoch", "version")]
        names = {f"#f{i}": name for i, name in enumerate(fields)}
        values: dict[str, Any] = {f":f{i}": tombstone[name] for i, name in enumerate(fields)}
        assignments = ", ".join(f"#f{i} = :f{i}" for i in range(len(fields)))
        if live:
            version = "#version = #version + :one"
            condition = (
                "attribute_exists(#version) AND (attribute_not_exists(#erased) OR #erased = :false)"
            )
        else:
            version = "#version = if_not_exists(#version, :zero)"
            condition = "attribute_not_exists(#version) OR #erased = :true"
        client = self.client
        await call(
            "UpdateItem user_state tombstone",
            lambda: client.update_item(
                TableName=self._state_table,
                Key={"user_id": {"S": user_id}},
                UpdateExpression=(
                    f"SET {assignments}, {version}, #erased = :true ADD #epoch :one"
                    " REMOVE #image, #video"
                ),
                ConditionExpression=condition,
                ExpressionAttributeNames={
                    **names,
                    "#version": "version",
                    "#erased": "erased",
                    "#epoch": "epoch",
                    "#image": "image_url",
                    "#video": "video_url",
                },
                ExpressionAttributeValues={
                    **values,
                    ":one": {"N": "1"},
                    ":true": {"BOOL": True},
                    **({":false": {"BOOL": False}} if live else {":zero": {"N": "0"}}),
                },
            ),
            self._retry,
            idempotent=False,
            passthrough=frozenset({"ConditionalCheckFailedException"}),
        )

    async def _delete_items(
        self, table: BatchTable, user_id: str, keys: list[dict[str, Any]]
    ) -> None:
        """Delete the items with ``keys`` from ``table``; raise :class:`StoreError` naming
        how many could not be deleted."""
        requests: list[WriteRequestTypeDef] = [{"DeleteRequest": {"Key": key}} for key in keys]
        failed = await write_batch(self.client, table, requests, self._retry)
        if failed:
            raise StoreError(
                f"could not delete {len(failed)} item(s) of user {user_id!r} from"
                f" {table.name}: {next(iter(failed.values()))}"
            )

    async def put_history(self, event: HistoryEvent) -> bool:
        """Record ``event`` once, while its user's state is at its version or later; see
        :func:`server.store.dynamodb_history.put_event`."""
        return await history.put_event(
            self.client,
            self._history_table,
            self._state_table,
            event,
            retention_days=self._history_retention_days,
            retry=self._retry,
        )

    async def history(
        self, user_id: str, query: HistoryQuery, *, now_ms: int
    ) -> list[HistoryEvent]:
        """The user's unexpired history events that ``query`` selects, newest first."""
        return await history.query_events(
            self.client, self._history_table, user_id, query, now_ms=now_ms, retry=self._retry
        )

    async def delete_history(self, user_id: str) -> int:
        """Delete every history event of the user; return how many."""
        return await history.delete_events(
            self.client, self._history_table, user_id, retry=self._retry
        )

    def _query(self, **request: Any) -> AsyncGenerator[dict[str, Any], None]:
        """The items of a Query, page after page."""
        return items_of_pages(self.client.query, request, self._retry)

    def _scan(self, **request: Any) -> AsyncGenerator[dict[str, Any], None]:
        """The items of a Scan, page after page."""
        return items_of_pages(self.client.scan, request, self._retry)
