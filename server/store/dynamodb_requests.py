"""Talking to DynamoDB so that a request either lands or is reported: retries, pages, batches.

Which failures are worth another try (:func:`is_retryable`): throttling always, because a
throttled request was not applied; a 5xx or a connection lost after sending only for
requests that may be applied twice (idempotent), because the first one may have landed.
``ADD`` to a usage counter is the one write here that is not idempotent.

:func:`write_batch` sends ``BatchWriteItem`` requests of at most 25 items, resends what
comes back in ``UnprocessedItems`` and what was throttled, with the store's
:class:`~brain.backoff.Backoff`, and returns the keys it could not write within
the policy's bound, so the caller can name exactly those rows. :func:`items_of_pages`
follows a Query's or Scan's pages, retrying each page on its own.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError as BotoConnectionError,
    HTTPClientError,
)

from brain.backoff import Backoff
from server.errors import StoreError
from server.store.dynamodb_items import ItemKey, key_of

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb.client import DynamoDBClient
    from types_aiobotocore_dynamodb.type_defs import WriteRequestTypeDef

T = TypeVar("T")

BATCH_SIZE = 25
"""The most items DynamoDB takes in one ``BatchWriteItem``."""

BATCH_CONCURRENCY = 16
"""Batches of one call in flight at once: enough to hide latency, few enough that one big
call leaves connections of the pool to the other tasks."""

THROTTLING_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
    }
)
SERVER_ERROR_CODES = frozenset({"InternalServerError", "ServiceUnavailable"})


def error_code(error: ClientError) -> str:
    """The DynamoDB error code of a client error (``""`` when there is none)."""
    return str(error.response.get("Error", {}).get("Code", ""))


def is_retryable(error: Exception, *, idempotent: bool) -> bool:
    """Whether ``error`` is worth another try of the same request.

    Throttling and a connection that was never made are always retryable (the request was
    not applied); a 5xx, a read timeout or a dropped connection only when ``idempotent``.
    """
    if isinstance(error, ClientError):
        code = error_code(error)
        if code in THROTTLING_CODES:
            return True
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return idempotent and (code in SERVER_ERROR_CODES or status >= 500)
    if isinstance(error, BotoConnectionError):
        return True
    return idempotent and isinstance(error, HTTPClientError)


async def call(
    what: str,
    operation: Callable[[], Awaitable[T]],
    retry: Backoff,
    *,
    idempotent: bool = True,
    passthrough: frozenset[str] = frozenset(),
) -> T:
    """``await operation()``, retried under ``retry`` while the failure is retryable.

    A :class:`ClientError` whose code is in ``passthrough`` is raised as it is, for the
    caller to interpret (e.g. ``ConditionalCheckFailedException``). Every other failure,
    once it is not retryable or the attempts are spent, raises
    :class:`~server.errors.StoreError` naming ``what`` failed.
    """
    retry_number = 0
    while True:
        try:
            return await operation()
        except ClientError as error:
            if error_code(error) in passthrough:
                raise
            failure: Exception = error
        except BotoCoreError as error:
            failure = error
        if not retry.may_retry(retry_number) or not is_retryable(failure, idempotent=idempotent):
            raise StoreError(f"DynamoDB {what} failed: {failure}") from failure
        await retry.wait(retry_number)
        retry_number += 1


async def items_of_pages(
    operation: Callable[..., Awaitable[Any]], request: dict[str, Any], retry: Backoff
) -> AsyncGenerator[dict[str, Any], None]:
    """The items of ``operation(**request)`` (a Query or Scan), following ``LastEvaluatedKey``.

    Raises :class:`~server.errors.StoreError` as :func:`call` does, for the page that failed.
    """
    what = getattr(operation, "__name__", "paginated request")
    start: dict[str, Any] = {}
    while True:
        page = await call(what, functools.partial(operation, **request, **start), retry)
        for item in page.get("Items", []):
            yield item
        last = page.get("LastEvaluatedKey")
        if not last:
            return
        start = {"ExclusiveStartKey": last}


@dataclass(frozen=True, slots=True)
class BatchTable:
    """The table a batch writes to and the names of its key attributes."""

    name: str
    partition_key: str
    sort_key: str | None = None

    def key(self, request: WriteRequestTypeDef | dict[str, Any]) -> ItemKey:
        """The key of a put or delete request."""
        if "PutRequest" in request:
            return key_of(dict(request["PutRequest"]["Item"]), self.partition_key, self.sort_key)
        return key_of(dict(request["DeleteRequest"]["Key"]), self.partition_key, self.sort_key)


async def write_batch(
    client: DynamoDBClient,
    table: BatchTable,
    requests: Sequence[WriteRequestTypeDef],
    retry: Backoff,
) -> dict[ItemKey, str]:
    """Write ``requests`` (unique keys) in batches of 25; return ``{key: why}`` for failures.

    An empty result means every request was applied. A key fails when DynamoDB keeps
    returning it unprocessed or keeps throttling until ``retry`` is spent, or when its batch
    meets an error that is not retryable (e.g. a validation error).
    """
    chunks = [requests[start : start + BATCH_SIZE] for start in range(0, len(requests), BATCH_SIZE)]
    gate = asyncio.Semaphore(BATCH_CONCURRENCY)

    async def bounded(chunk: Sequence[WriteRequestTypeDef]) -> dict[ItemKey, str]:
        async with gate:
            return await _write_chunk(client, table, chunk, retry)

    failed: dict[ItemKey, str] = {}
    for result in await asyncio.gather(*(bounded(chunk) for chunk in chunks)):
        failed.update(result)
    return failed


async def _write_chunk(
    client: DynamoDBClient,
    table: BatchTable,
    chunk: Sequence[WriteRequestTypeDef],
    retry: Backoff,
) -> dict[ItemKey, str]:
    pending = {table.key(request): request for request in chunk}
    reason = ""
    retry_number = 0
    while True:
        try:
            response = await client.batch_write_item(
                RequestItems={table.name: list(pending.values())}
            )
        except (ClientError, BotoCoreError) as error:
            # A batch of puts and deletes may be applied twice: it is idempotent.
            if not is_retryable(error, idempotent=True):
                return dict.fromkeys(pending, f"BatchWriteItem failed: {error}")
            reason = f"BatchWriteItem kept failing: {error}"
        else:
            unprocessed = response.get("UnprocessedItems", {}).get(table.name, [])
            unprocessed_keys = {table.key(dict(request)) for request in unprocessed}
            pending = {key: req for key, req in pending.items() if key in unprocessed_keys}
            if not pending:
                return {}
            reason = "DynamoDB kept returning the item in UnprocessedItems"
        if not retry.may_retry(retry_number):
            return dict.fromkeys(pending, f"{reason} ({retry_number + 1} attempts)")
        await retry.wait(retry_number)
        retry_number += 1
