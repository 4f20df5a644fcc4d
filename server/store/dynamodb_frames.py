"""Frames in DynamoDB: one item per (user, device, minute), merged by conditional writes.

An item of the ``frames`` table is a bucket of :mod:`server.store.frame_buckets`: ``sk`` is
``<minute start, 13 digits>#<device>``, ``f`` the packed frames (binary), ``n`` how many,
``v`` a version that grows by one on every write, and ``expires_at`` the TTL of the newest
frame. A minute of 1 Hz frames is one item under 1 KB: one write request unit for 60 frames
when it is written once, instead of 60.

Merging: a write is a ``PutItem`` conditional on the version it merged into (or on the item
not existing yet). When another writer got there first, the condition fails, DynamoDB hands
back the item as it is now (``ReturnValuesOnConditionCheckFailure``), the frames are merged
into that and the write tried again, so two nodes writing one bucket never lose a frame.
The last bucket written per device is remembered (bounded, least recently used first out),
so the next write of the same minute needs no read, and a resend of frames the bucket holds
already writes nothing.

Items of the one-item-per-frame layout (``payload`` holding one frame's JSON) are still read,
exported and erased, so a table written by an older version needs no migration.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from brain.backoff import Backoff
from brain.model import TIME_ORDER, Frame
from server.errors import FramesNotDurable, StoreError
from server.store import codec
from server.store import frame_buckets as buckets
from server.store.base import FrameRow
from server.store.dynamodb_requests import BATCH_CONCURRENCY, call

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb.client import DynamoDBClient
    from types_aiobotocore_dynamodb.type_defs import AttributeValueTypeDef

MAX_MERGE_ATTEMPTS = 8
"""Conflicting writers of one bucket a write outlasts before it gives up (each conflict
means another writer's merge landed, so the bucket keeps making progress)."""

REMEMBERED_BUCKETS = 20_000
"""Latest buckets kept in memory (about 1 KB each): one per device streaming to this node."""

Items = Callable[..., AsyncIterator[dict[str, Any]]]
"""The store's paginated Query: request keyword arguments in, items out."""


@dataclass(frozen=True, slots=True)
class _Known:
    """The last state of a bucket this node wrote or saw: its version and payload."""

    start_ms: int
    version: int
    payload: bytes

    @property
    def packed(self) -> tuple[int, bytes]:
        """The bucket's start and payload, as :func:`frame_buckets.decode` takes them."""
        return self.start_ms, self.payload


class DynamoDBFrames:
    """Frame reads and writes of one ``frames`` table, for :class:`DynamoDBStore`.

    ``client`` returns the store's open client (raising
    :class:`~server.errors.StoreError` when it is closed); ``query`` is its paginated Query.
    """

    def __init__(
        self,
        client: Callable[[], DynamoDBClient],
        table: str,
        *,
        retention_days: int,
        retry: Backoff,
        query: Items,
        remembered: int = REMEMBERED_BUCKETS,
    ) -> None:
        self._client = client
        self._table = table
        self._retention_days = retention_days
        self._retry = retry
        self._query = query
        self._remembered = remembered
        self._known: OrderedDict[tuple[str, str], _Known] = OrderedDict()

    async def put(self, rows: Sequence[FrameRow]) -> None:
        """Merge the rows into their buckets, up to :data:`BATCH_CONCURRENCY` buckets at once.

        Raises :class:`~server.errors.FramesNotDurable` naming the rows of the buckets that
        could not be written (the others are durable).
        """
        grouped = buckets.group((i, user_id, frame) for i, (user_id, frame) in enumerate(rows))
        gate = asyncio.Semaphore(BATCH_CONCURRENCY)

        async def bounded(bucket: buckets.BucketId, frames: list[Frame]) -> str | None:
            async with gate:
                return await self._merge(bucket, frames)

        ordered = list(grouped.items())
        reasons = await asyncio.gather(
            *(bounded(bucket, [frame for _, frame in indexed]) for bucket, indexed in ordered)
        )
        failed = {
            index
            for (_, indexed), reason in zip(ordered, reasons, strict=True)
            if reason is not None
            for index, _ in indexed
        }
        if failed:
            raise FramesNotDurable(frozenset(failed), next(r for r in reasons if r is not None))

    async def _merge(self, bucket: buckets.BucketId, frames: list[Frame]) -> str | None:
        """Write ``frames`` into ``bucket``; ``None`` once durable, else why not."""
        memory_key = (bucket.user_id, bucket.device)
        known = self._known.get(memory_key)
        if known is not None and known.start_ms != bucket.start_ms:
            known = None
        for _ in range(MAX_MERGE_ATTEMPTS):
            version = 0 if known is None else known.version
            stored = (
                []
                if known is None
                else buckets.decode(bucket.device, known.start_ms, known.payload)
            )
            merged, added = buckets.merge(stored, frames)
            if not added:
                return None  # every frame is there already: a resend costs nothing
            payload = buckets.encode(bucket, merged)
            try:
                await self._put(bucket, merged, payload, version)
            except ClientError as error:
                old: Any = error.response.get("Item")
                known = (
                    None if not old else _Known(bucket.start_ms, int(old["v"]["N"]), old["f"]["B"])
                )
                continue
            except StoreError as error:
                return str(error)
            self._remember(memory_key, _Known(bucket.start_ms, version + 1, payload))
            return None
        return f"bucket {bucket.sort_key} kept changing under {MAX_MERGE_ATTEMPTS} writes"

    async def _put(
        self, bucket: buckets.BucketId, frames: list[Frame], payload: bytes, version: int
    ) -> None:
        """PutItem of the bucket at ``version + 1`` if it is still at ``version`` (0: absent).

        Raises :class:`ClientError` when the condition failed (with the item found), or
        :class:`~server.errors.StoreError`.
        """
        item: dict[str, AttributeValueTypeDef] = {
            "user_id": {"S": bucket.user_id},
            "sk": {"S": bucket.sort_key},
            "v": {"N": str(version + 1)},
            "n": {"N": str(len(frames))},
            "expires_at": {"N": str(buckets.expires_at(frames, self._retention_days))},
            "f": {"B": payload},
        }
        if version == 0:
            condition, values = "attribute_not_exists(#sk)", None
        else:
            condition, values = "#v = :v", {":v": {"N": str(version)}}
        request: dict[str, Any] = {
            "TableName": self._table,
            "Item": item,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": {"#sk": "sk"} if version == 0 else {"#v": "v"},
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        if values is not None:
            request["ExpressionAttributeValues"] = values
        client = self._client()
        await call(
            "PutItem frames",
            lambda: client.put_item(**request),
            self._retry,
            passthrough=frozenset({"ConditionalCheckFailedException"}),
        )

    def _remember(self, key: tuple[str, str], known: _Known) -> None:
        self._known[key] = known
        self._known.move_to_end(key)
        while len(self._known) > self._remembered:
            self._known.popitem(last=False)

    def forget_user(self, user_id: str) -> None:
        """Drop what this node remembers of ``user_id``'s buckets (after an erase)."""
        for key in [key for key in self._known if key[0] == user_id]:
            del self._known[key]

    async def between(
        self, user_id: str, start_ms: int, end_ms: int, *, now_ms: int
    ) -> list[Frame]:
        """The user's unexpired frames with ``start_ms <= ts < end_ms``, oldest first."""
        start_ms, end_ms = max(start_ms, 0), min(end_ms, 10**13)
        if end_ms <= start_ms:
            return []
        # Sort keys start with a 13-digit time ("#" sorts before "$"): this range holds every
        # bucket that may hold a frame of start_ms .. end_ms - 1.
        found = self._query(
            TableName=self._table,
            KeyConditionExpression="#pk = :user AND #sk BETWEEN :low AND :high",
            FilterExpression="#expires >= :now",
            ExpressionAttributeNames={"#pk": "user_id", "#sk": "sk", "#expires": "expires_at"},
            ExpressionAttributeValues={
                ":user": {"S": user_id},
                ":low": {"S": f"{buckets.bucket_start(start_ms):013d}#"},
                ":high": {"S": f"{end_ms - 1:013d}$"},
                ":now": {"N": str(now_ms // 1000)},
            },
            ConsistentRead=True,
        )
        frames = [frame async for item in found for frame in frames_of(item)]
        kept = buckets.between(frames, start_ms, end_ms, now_ms, self._retention_days)
        return sorted(kept, key=TIME_ORDER)

    async def keys_and_counts(self, user_id: str) -> list[tuple[dict[str, Any], int]]:
        """Every frames item key of the user (expired ones too) and how many frames it holds."""
        found = self._query(
            TableName=self._table,
            KeyConditionExpression="#pk = :user",
            ProjectionExpression="#pk, #sk, #n",
            ExpressionAttributeNames={"#pk": "user_id", "#sk": "sk", "#n": "n"},
            ExpressionAttributeValues={":user": {"S": user_id}},
            ConsistentRead=True,
        )
        return [
            (
                {"user_id": item["user_id"], "sk": item["sk"]},
                int(item["n"]["N"]) if "n" in item else 1,  # an old one-frame item has no n
            )
            async for item in found
        ]


def frames_of(item: dict[str, Any]) -> list[Frame]:
    """The frames a ``frames`` item holds: a bucket, or one frame of the older layout.

    Raises :class:`ValueError` or :class:`KeyError` on an item the store did not write.
    """
    if "payload" in item:
        return [codec.decode_frame(item["payload"]["S"])]
    start, _, device = item["sk"]["S"].partition("#")
    return buckets.decode(device, int(start), item["f"]["B"])
