"""Acks across hops in the DynamoDB store: what each device has shown, and the commands.

:class:`DynamoDBHops` is a part of :class:`~server.store.dynamodb.DynamoDBStore` (which
inherits it), kept in a module of its own the way the saga tables are. Tables:
``device_seen`` (PK ``user_id``, SK ``device``: one small item per device) and ``commands``
(PK ``user_id``, SK ``command_id``; TTL ``purge_at``, 30 days after the command expired).
A new command is a conditional put (``attribute_not_exists``), so a retried commit never
resets an outcome; settling is one conditional UpdateItem on ``outcome = pending``, so the
first result wins and a repeated one changes nothing.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, Final, Protocol

import orjson
from botocore.exceptions import ClientError

from brain.backoff import Backoff
from server.store.base import EXPIRED, PENDING, CommandRecord, DeviceSeen
from server.store.dynamodb_requests import BatchTable, call

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb.client import DynamoDBClient
    from types_aiobotocore_dynamodb.type_defs import AttributeValueTypeDef

    Item = dict[str, AttributeValueTypeDef]

PURGE_AFTER_MS: Final = 30 * 24 * 3600 * 1000
"""How long a command's record outlives its expiry (the history the routes show)."""
_CONDITION_FAILED: Final = frozenset({"ConditionalCheckFailedException"})
_SETTLE_ROUNDS: Final = 3
"""Rounds of the two conditional updates when the command turns up pending between them."""


class _Table(Protocol):
    """What the hop methods use of the store."""

    _retry: Backoff
    _seen: BatchTable
    _commands: BatchTable

    @property
    def client(self) -> DynamoDBClient: ...

    def _query(self, **request: Any) -> AsyncGenerator[dict[str, Any], None]: ...


class DynamoDBHops:
    """The last-seen and command methods of the :class:`~server.store.base.Store`, on DynamoDB."""

    async def put_seen(self: _Table, seen: DeviceSeen) -> None:
        """Record ``seen``, replacing the device's earlier item."""
        client = self.client
        item: Item = {
            "user_id": {"S": seen.user_id},
            "device": {"S": seen.device},
            "kind": {"S": seen.kind},
            "version": {"N": str(seen.version)},
            "seen_at": {"N": str(seen.seen_at)},
        }
        await call(
            "PutItem device_seen",
            lambda: client.put_item(TableName=self._seen.name, Item=item),
            self._retry,
        )

    async def devices_seen(self: _Table, user_id: str) -> list[DeviceSeen]:
        """The user's devices, by name (one Query)."""
        found: list[DeviceSeen] = []
        async with aclosing(self._query(**_of_user(self._seen.name, user_id))) as items:
            async for item in items:
                found.append(
                    DeviceSeen(
                        user_id,
                        item["device"]["S"],
                        item["kind"]["S"],
                        int(item["version"]["N"]),
                        int(item["seen_at"]["N"]),
                    )
                )
        return found

    async def put_commands(self: _Table, commands: Sequence[CommandRecord]) -> None:
        """Record new commands with conditional puts; ids recorded already are left alone."""
        client = self.client
        for command in commands:
            item = command_item(command)
            try:
                await call(
                    "PutItem commands",
                    functools.partial(
                        client.put_item,
                        TableName=self._commands.name,
                        Item=item,
                        ConditionExpression="attribute_not_exists(command_id)",
                    ),
                    self._retry,
                    passthrough=_CONDITION_FAILED,
                )
            except ClientError:
                continue  # the passthrough: recorded already (a retry, or another node)

    async def settle_command(
        self: _Table, user_id: str, command_id: str, outcome: str, *, device: str | None, at: int
    ) -> CommandRecord | None:
        """Settle a pending command once: a conditional UpdateItem that holds only while the
        command has not expired, or one that records ``expired`` only once it has; the
        command as it is now, or ``None`` when there is no such command.

        The two conditions are disjoint, so a command recorded between the two updates (a
        commit listener's put racing a fast watch's answer) is never marked ``expired`` by
        the second: the read after them finds it pending and the updates run once more."""
        client = self.client
        key: Item = {"user_id": {"S": user_id}, "command_id": {"S": command_id}}
        attempts = (
            (outcome, "outcome = :pending AND expires_at >= :at"),
            (EXPIRED, "outcome = :pending AND expires_at < :at"),
        )
        current: CommandRecord | None = None
        for _ in range(_SETTLE_ROUNDS):
            for recorded, condition in attempts:
                values: dict[str, AttributeValueTypeDef] = {
                    ":outcome": {"S": recorded},
                    ":at": {"N": str(at)},
                    ":pending": {"S": PENDING},
                    ":device": {"S": device} if device is not None else {"NULL": True},
                }
                try:
                    response = await call(
                        "UpdateItem commands",
                        functools.partial(
                            client.update_item,
                            TableName=self._commands.name,
                            Key=key,
                            UpdateExpression="SET outcome = :outcome, outcome_at = :at,"
                            " device = :device",
                            ConditionExpression=condition,
                            ExpressionAttributeValues=values,
                            ReturnValues="ALL_NEW",
                        ),
                        self._retry,
                        idempotent=False,
                        passthrough=_CONDITION_FAILED,
                    )
                except ClientError:
                    continue  # settled already, the other side of the expiry, or no command
                return command_of(response["Attributes"])
            found = await call(
                "GetItem commands",
                lambda: client.get_item(
                    TableName=self._commands.name, Key=key, ConsistentRead=True
                ),
                self._retry,
            )
            item = found.get("Item")
            current = command_of(item) if item else None
            if current is None or current.outcome != PENDING:
                return current
        return current

    async def commands_of(self: _Table, user_id: str, limit: int = 100) -> list[CommandRecord]:
        """The user's newest ``limit`` commands, newest first (one Query; the table keeps a
        user's commands for 30 days after they expired)."""
        found: list[CommandRecord] = []
        async with aclosing(self._query(**_of_user(self._commands.name, user_id))) as items:
            async for item in items:
                found.append(command_of(item))
        found.sort(key=lambda c: (-c.issued_at, c.command_id))
        return found[:limit]


def _of_user(table: str, user_id: str) -> dict[str, Any]:
    return {
        "TableName": table,
        "KeyConditionExpression": "user_id = :user",
        "ExpressionAttributeValues": {":user": {"S": user_id}},
        "ConsistentRead": True,
    }


def command_item(command: CommandRecord) -> Item:
    """The ``commands`` item of a command (``purge_at``, epoch s, is the TTL attribute)."""
    item: Item = {
        "user_id": {"S": command.user_id},
        "command_id": {"S": command.command_id},
        "kind": {"S": command.kind},
        "params": {"S": orjson.dumps(dict(command.params)).decode()},
        "version": {"N": str(command.version)},
        "issued_at": {"N": str(command.issued_at)},
        "expires_at": {"N": str(command.expires_at)},
        "outcome": {"S": command.outcome},
        "purge_at": {"N": str((command.expires_at + PURGE_AFTER_MS) // 1000)},
    }
    if command.outcome_at is not None:
        item["outcome_at"] = {"N": str(command.outcome_at)}
    if command.device is not None:
        item["device"] = {"S": command.device}
    return item


def command_of(item: dict[str, Any]) -> CommandRecord:
    """The command a ``commands`` item holds."""
    outcome_at = item.get("outcome_at", {}).get("N")
    device = item.get("device", {}).get("S")  # absent or NULL: the server expired it
    return CommandRecord(
        user_id=item["user_id"]["S"],
        command_id=item["command_id"]["S"],
        kind=item["kind"]["S"],
        params=orjson.loads(item["params"]["S"]),
        version=int(item["version"]["N"]),
        issued_at=int(item["issued_at"]["N"]),
        expires_at=int(item["expires_at"]["N"]),
        outcome=item["outcome"]["S"],
        outcome_at=int(outcome_at) if outcome_at is not None else None,
        device=device,
    )
