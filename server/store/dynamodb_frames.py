"""Frames in DynamoDB: one item per (user, device, minute) and part, merged by conditional writes.

An item of the ``frames`` table is one part of a bucket of :mod:`server.store.frame_buckets`:
``sk`` is ``<minute start, 13 digits>#<device>#<part>``, ``f`` the packed frames (binary),
``n`` how many, ``t0``/``t1`` their first and last ``ts``, ``v`` a version that grows by one
on every write, and ``expires_at`` the TTL of the newest frame. A minute of 1 Hz frames is
one item under 1 KB: one write request unit for 60 frames when it is written once, instead
of 60.

Merging: a write is a ``PutItem`` conditional on the version of the part it merged into (or
on the part not existing yet). When another writer got there first, the condition fails,
the bucket's parts are read again (one strongly consistent Query), the frames placed anew
and the write tried again, so two nodes writing one bucket never lose or duplicate a frame.
The parts of each device's current bucket are remembered
(:class:`~server.store.open_buckets.OpenBuckets`), so the next write of the same minute
needs no read, appends a chunk to the part without decoding it, and a resend of frames the
bucket holds already writes nothing. A node that does not know a bucket assumes it is new
(``attribute_not_exists``): the common case costs no read either. The writes of one device
on this node take turns (the ingest runs several batches at once), so they never fail each
other's conditions.

Items of the one-item-per-frame layout (``payload`` holding one frame's JSON) are still read,
exported and erased, so a table written by an older version needs no migration.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from brain.backoff import Backoff
from brain.model import TIME_ORDER, Frame
from server.errors import FramesNotDurable, StoreError
from server.store import codec, frame_buckets as buckets, frame_payload as payloads
from server.store.base import FrameRow
from server.store.dynamodb_requests import BATCH_CONCURRENCY, call
from server.store.open_buckets import OPEN_BUCKETS, OpenBuckets

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb.client import DynamoDBClient
    from types_aiobotocore_dynamodb.type_defs import AttributeValueTypeDef

MAX_MERGE_ATTEMPTS = 8
"""Conflicting writers of one bucket a write outlasts before it gives up (each conflict
means another writer's write landed, so the bucket keeps making progress)."""

Items = Callable[..., AsyncIterator[dict[str, Any]]]
"""The store's paginated Query: request keyword arguments in, items out."""


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
        remembered: int = OPEN_BUCKETS,
    ) -> None:
        self._client = client
        self._table = table
        self._retention_days = retention_days
        self._retry = retry
        self._query = query
        self._known = OpenBuckets(remembered)
        # One write at a time per device here (the ingest runs several batches at once):
        # two would only make each other's conditions fail. Entries live while in use.
        self._turns: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}

    async def put(self, rows: Sequence[FrameRow]) -> None:
        """Add the rows to their buckets, up to :data:`BATCH_CONCURRENCY` buckets at once.

        Raises :class:`~server.errors.FramesNotDurable` naming the rows of the buckets that
        could not be written (the others are durable).
        """
        grouped = buckets.group((i, user_id, frame) for i, (user_id, frame) in enumerate(rows))
        gate = asyncio.Semaphore(BATCH_CONCURRENCY)

        async def bounded(bucket: buckets.BucketId, frames: list[Frame]) -> str | None:
            async with self._turn(bucket), gate:
                return await self._add(bucket, frames)

        ordered = sorted(grouped.items(), key=lambda item: item[0].start_ms)
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

    @asynccontextmanager
    async def _turn(self, bucket: buckets.BucketId) -> AsyncIterator[None]:
        """Wait for the device's earlier writes here to finish, then hold its turn."""
        key = (bucket.user_id, bucket.device)
        lock, users = self._turns.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._turns[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._turns[key]
            if users == 1:
                del self._turns[key]
            else:
                self._turns[key] = (lock, users - 1)

    async def _add(self, bucket: buckets.BucketId, new: list[Frame]) -> str | None:
        """Write ``new`` into ``bucket``; ``None`` once durable, else why not."""
        stored = self._known.get(bucket)
        if stored is None:
            stored = {}  # assume a new minute: no read (a failed condition says otherwise)
        for _ in range(MAX_MERGE_ATTEMPTS):
            changed = buckets.add(bucket, stored, new)
            try:
                for number, part in sorted(changed.items()):
                    await self._put(bucket, number, part)
                    stored = {**stored, number: part}
            except ClientError:
                self._known.forget(bucket)
                try:
                    stored = await self._load(bucket)
                except StoreError as error:
                    return str(error)
                continue
            except StoreError as error:
                self._known.forget(bucket)  # a write may have landed: read next time
                return str(error)
            self._known.put(bucket, stored)
            return None
        self._known.forget(bucket)
        return f"bucket {bucket.sort_key(0)} kept changing under {MAX_MERGE_ATTEMPTS} writes"

    async def _put(self, bucket: buckets.BucketId, number: int, part: buckets.StoredPart) -> None:
        """PutItem of ``part`` if the stored one is still at the version before it (absent
        when ``part`` is the first version).

        Raises :class:`ClientError` when the condition failed, or
        :class:`~server.errors.StoreError`.
        """
        info = part.info
        item: dict[str, AttributeValueTypeDef] = {
            "user_id": {"S": bucket.user_id},
            "sk": {"S": bucket.sort_key(number)},
            "v": {"N": str(part.version)},
            "n": {"N": str(info.count)},
            "t0": {"N": str(info.first_ts)},
            "t1": {"N": str(info.last_ts)},
            "expires_at": {"N": str(info.expires_at(self._retention_days))},
            "f": {"B": part.payload},
        }
        request: dict[str, Any] = {"TableName": self._table, "Item": item}
        if part.version == 1:
            request["ConditionExpression"] = "attribute_not_exists(#sk)"
            request["ExpressionAttributeNames"] = {"#sk": "sk"}
        else:
            request["ConditionExpression"] = "#v = :v"
            request["ExpressionAttributeNames"] = {"#v": "v"}
            request["ExpressionAttributeValues"] = {":v": {"N": str(part.version - 1)}}
        client = self._client()
        await call(
            "PutItem frames",
            lambda: client.put_item(**request),
            self._retry,
            passthrough=frozenset({"ConditionalCheckFailedException"}),
        )

    async def _load(self, bucket: buckets.BucketId) -> dict[int, buckets.StoredPart]:
        """Every part of ``bucket`` as stored now (a strongly consistent Query).

        Raises :class:`~server.errors.StoreError`.
        """
        found = self._query(
            TableName=self._table,
            KeyConditionExpression="#pk = :user AND begins_with(#sk, :prefix)",
            ExpressionAttributeNames={"#pk": "user_id", "#sk": "sk"},
            ExpressionAttributeValues={
                ":user": {"S": bucket.user_id},
                ":prefix": {"S": f"{bucket.start_ms:013d}#{bucket.device}#"},
            },
            ConsistentRead=True,
        )
        parts: dict[int, buckets.StoredPart] = {}
        async for item in found:
            _, number = buckets.BucketId.of_sort_key(bucket.user_id, item["sk"]["S"])
            info = buckets.PartInfo(
                number, int(item["n"]["N"]), int(item["t0"]["N"]), int(item["t1"]["N"])
            )
            payload = item["f"]["B"]
            chunks = payloads.chunk_count(payload)
            parts[number] = buckets.StoredPart(info, payload, chunks, int(item["v"]["N"]))
        return parts

    def forget_user(self, user_id: str) -> None:
        """Drop what this node remembers of ``user_id``'s buckets (after an erase)."""
        self._known.forget_user(user_id)

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
    bucket, _ = buckets.BucketId.of_sort_key(item["user_id"]["S"], item["sk"]["S"])
    return buckets.decode(bucket.device, bucket.start_ms, item["f"]["B"])
