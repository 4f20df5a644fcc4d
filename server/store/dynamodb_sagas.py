"""The durable avatar saga in the DynamoDB store: sagas in flight and the dead-letter list.

:class:`DynamoDBSagas` is a part of :class:`~server.store.dynamodb.DynamoDBStore` (which
inherits it), kept in a module of its own so the saga tables are read in one place. Tables:
``avatar_sagas`` (PK ``user_id``, one saga in flight per user) and ``avatar_dead_letters``
(PK ``user_id``, SK ``letter_key`` = ``failed_at#saga_id``). A claim is one conditional
UpdateItem, so two nodes never both take over a saga; the listings Scan, which is fine for
an admin command and for a table that holds only sagas in flight.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, Protocol

from botocore.exceptions import ClientError

from brain.backoff import Backoff
from server.store.base import DeadLetter, SagaRecord
from server.store.dynamodb_requests import BatchTable, call

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb.client import DynamoDBClient
    from types_aiobotocore_dynamodb.type_defs import AttributeValueTypeDef

    Item = dict[str, AttributeValueTypeDef]

_SAGA_NAMES = {
    "#owner": "owner",
    "#lease": "lease_until",
    "#attempts": "attempts",
    "#saga": "saga_id",
}
"""Attribute names of the saga conditions (``owner`` is a DynamoDB reserved word)."""


class _Table(Protocol):
    """What the saga methods use of the store."""

    _retry: Backoff
    _saga_table: str
    _letters: BatchTable

    @property
    def client(self) -> DynamoDBClient: ...

    def _scan(self, **request: Any) -> AsyncGenerator[dict[str, Any], None]: ...


class DynamoDBSagas:
    """The saga methods of the :class:`~server.store.base.Store` protocol, on DynamoDB."""

    async def put_saga(self: _Table, record: SagaRecord) -> None:
        """Record ``record``, replacing the user's earlier saga."""
        client = self.client
        await call(
            "PutItem avatar_sagas",
            lambda: client.put_item(TableName=self._saga_table, Item=saga_item(record)),
            self._retry,
        )

    async def claim_saga(
        self: _Table, user_id: str, saga_id: str, owner: str, *, now_ms: int, lease_until: int
    ) -> SagaRecord | None:
        """Take the saga over with one conditional UpdateItem; the claimed record or ``None``.

        Not retried after a lost answer (``idempotent=False``): a retry would count an
        attempt twice, and the lease it may have taken ends by itself.
        """
        client = self.client
        try:
            response = await call(
                "UpdateItem avatar_sagas",
                lambda: client.update_item(
                    TableName=self._saga_table,
                    Key={"user_id": {"S": user_id}},
                    UpdateExpression="SET #owner = :owner, #lease = :lease ADD #attempts :one",
                    ConditionExpression=("#saga = :saga AND (#owner = :owner OR #lease <= :now)"),
                    ExpressionAttributeNames=_SAGA_NAMES,
                    ExpressionAttributeValues={
                        ":owner": {"S": owner},
                        ":lease": {"N": str(lease_until)},
                        ":one": {"N": "1"},
                        ":saga": {"S": saga_id},
                        ":now": {"N": str(now_ms)},
                    },
                    ReturnValues="ALL_NEW",
                ),
                self._retry,
                idempotent=False,
                passthrough=frozenset({"ConditionalCheckFailedException"}),
            )
        except ClientError:
            return None  # the passthrough: ended, or held by another owner
        return saga_of(response["Attributes"])

    async def renew_saga(
        self: _Table, user_id: str, saga_id: str, owner: str, lease_until: int
    ) -> bool:
        """Extend ``owner``'s lease; ``False`` when the saga ended or changed hands."""
        client = self.client
        try:
            await call(
                "UpdateItem avatar_sagas",
                lambda: client.update_item(
                    TableName=self._saga_table,
                    Key={"user_id": {"S": user_id}},
                    UpdateExpression="SET #lease = :lease",
                    ConditionExpression="#saga = :saga AND #owner = :owner",
                    ExpressionAttributeNames={
                        name: _SAGA_NAMES[name] for name in ("#lease", "#saga", "#owner")
                    },
                    ExpressionAttributeValues={
                        ":lease": {"N": str(lease_until)},
                        ":saga": {"S": saga_id},
                        ":owner": {"S": owner},
                    },
                ),
                self._retry,
                passthrough=frozenset({"ConditionalCheckFailedException"}),
            )
        except ClientError:
            return False
        return True

    async def resumable_sagas(
        self: _Table, owner: str, *, now_ms: int, limit: int = 100
    ) -> list[SagaRecord]:
        """Sagas whose lease ended before ``now_ms`` or that ``owner`` holds, oldest first.

        A Scan of the saga table, which holds only the sagas in flight (a record is deleted
        when its saga ends), so it stays small.
        """
        scan = self._scan(
            TableName=self._saga_table,
            FilterExpression="#lease <= :now OR #owner = :owner",
            ExpressionAttributeNames={"#lease": "lease_until", "#owner": "owner"},
            ExpressionAttributeValues={":now": {"N": str(now_ms)}, ":owner": {"S": owner}},
            ConsistentRead=True,
        )
        async with aclosing(scan):
            found = [saga_of(item) async for item in scan]
        return sorted(found, key=lambda record: record.started_at)[:limit]

    async def end_saga(self: _Table, user_id: str, saga_id: str) -> None:
        """Delete the user's saga record if it is still ``saga_id``'s."""
        client = self.client
        try:
            await call(
                "DeleteItem avatar_sagas",
                lambda: client.delete_item(
                    TableName=self._saga_table,
                    Key={"user_id": {"S": user_id}},
                    ConditionExpression="#saga = :saga",
                    ExpressionAttributeNames={"#saga": "saga_id"},
                    ExpressionAttributeValues={":saga": {"S": saga_id}},
                ),
                self._retry,
                passthrough=frozenset({"ConditionalCheckFailedException"}),
            )
        except ClientError:
            pass  # gone already, or a newer saga's record: leave it

    async def add_dead_letter(self: _Table, letter: DeadLetter) -> None:
        """Keep ``letter`` (a repeat of the same key replaces it)."""
        client = self.client
        await call(
            "PutItem avatar_dead_letters",
            lambda: client.put_item(TableName=self._letters.name, Item=dead_letter_item(letter)),
            self._retry,
        )

    async def dead_letters(self: _Table, limit: int = 1000) -> list[DeadLetter]:
        """Up to ``limit`` dead letters, oldest first: a Scan, for the admin command."""
        scan = self._scan(TableName=self._letters.name, ConsistentRead=True)
        async with aclosing(scan):
            found = [dead_letter_of(item) async for item in scan]
        found.sort(key=lambda letter: (letter.failed_at, letter.user_id))
        return found[:limit]

    async def remove_dead_letter(self: _Table, user_id: str, key: str) -> None:
        """Delete one dead letter; nothing when it is gone already."""
        client = self.client
        await call(
            "DeleteItem avatar_dead_letters",
            lambda: client.delete_item(
                TableName=self._letters.name,
                Key={"user_id": {"S": user_id}, "letter_key": {"S": key}},
            ),
            self._retry,
        )


def saga_item(record: SagaRecord) -> Item:
    """The ``avatar_sagas`` item of a saga in flight."""
    return {
        "user_id": {"S": record.user_id},
        "saga_id": {"S": record.saga_id},
        "cache_hash": {"S": record.cache_hash},
        "owner": {"S": record.owner},
        "started_at": {"N": str(record.started_at)},
        "lease_until": {"N": str(record.lease_until)},
        "attempts": {"N": str(record.attempts)},
    }


def saga_of(item: dict[str, Any]) -> SagaRecord:
    """The saga record an ``avatar_sagas`` item holds."""
    return SagaRecord(
        user_id=item["user_id"]["S"],
        saga_id=item["saga_id"]["S"],
        cache_hash=item["cache_hash"]["S"],
        owner=item["owner"]["S"],
        started_at=int(item["started_at"]["N"]),
        lease_until=int(item["lease_until"]["N"]),
        attempts=int(item["attempts"]["N"]),
    )


def dead_letter_item(letter: DeadLetter) -> Item:
    """The ``avatar_dead_letters`` item of a failed saga."""
    return {
        "user_id": {"S": letter.user_id},
        "letter_key": {"S": letter.key},
        "failed_at": {"N": str(letter.failed_at)},
        "saga_id": {"S": letter.saga_id},
        "cache_hash": {"S": letter.cache_hash},
        "reason": {"S": letter.reason},
        "state": {"S": letter.state},
        "mood": {"S": letter.mood},
        "attempts": {"N": str(letter.attempts)},
    }


def dead_letter_of(item: dict[str, Any]) -> DeadLetter:
    """The dead letter an ``avatar_dead_letters`` item holds."""
    return DeadLetter(
        user_id=item["user_id"]["S"],
        failed_at=int(item["failed_at"]["N"]),
        saga_id=item["saga_id"]["S"],
        cache_hash=item["cache_hash"]["S"],
        reason=item["reason"]["S"],
        state=item["state"]["S"],
        mood=item["mood"]["S"],
        attempts=int(item["attempts"]["N"]),
    )
