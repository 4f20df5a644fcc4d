"""Counting and timing the store's calls by operation, whatever adapter the store is.

:func:`count_store_errors` wraps each operation of the :class:`~server.store.base.Store`
interface *on the instance*, so every part that already holds the store (ingest, state,
pipeline, sagas) is counted, and checks of the adapter's class elsewhere (retention is
SQLite-only) still see the adapter itself, which a wrapper object would hide. A lost
version race (:class:`~server.errors.VersionConflict`) is the optimistic-concurrency rule
working, not a failure, and is not counted. Every call, failed or not, is timed in
``companion_store_seconds{operation}`` (the store's own latency: in a cluster on DynamoDB,
most of a commit's push latency).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

from server.errors import StoreError, VersionConflict
from server.metrics import Metrics
from server.store.base import Store

OPERATIONS: Final = (
    "ping",
    "put_frames",
    "frames_between",
    "get_state",
    "put_state",
    "users_with_avatar_status",
    "get_avatar",
    "put_avatar",
    "add_usage",
    "get_usage",
    "export_user",
    "delete_user",
    "put_history",
    "history",
    "delete_history",
)
"""The ``operation`` label values of ``companion_store_errors`` and
``companion_store_seconds``: the store interface."""

_MARK: Final = "_companion_counted"


def count_store_errors(store: Store, metrics: Metrics) -> None:
    """Count ``store``'s failures in ``metrics.store_errors`` and time its calls in
    ``metrics.store_seconds``. Idempotent per store."""
    if getattr(store, _MARK, False):
        return
    for operation in OPERATIONS:
        method = getattr(store, operation, None)
        if method is not None:
            setattr(store, operation, _counted(operation, method, metrics))
    setattr(store, _MARK, True)
    for operation in OPERATIONS:  # every label exists from the start, at zero
        metrics.store_errors.labels(operation)
        metrics.store_seconds.labels(operation)


def _counted(
    operation: str, method: Callable[..., Awaitable[Any]], metrics: Metrics
) -> Callable[..., Awaitable[Any]]:
    counter = metrics.store_errors.labels(operation)
    timer = metrics.store_seconds.labels(operation)
    clock = time.perf_counter

    @functools.wraps(method)
    async def call(*args: Any, **kwargs: Any) -> Any:
        started = clock()
        try:
            return await method(*args, **kwargs)
        except VersionConflict:
            raise
        except (StoreError, OSError, TimeoutError):
            counter.inc()
            raise
        finally:
            timer.observe(clock() - started)

    return call
