"""Counting the store's failures by operation, whatever adapter the store is.

:func:`count_store_errors` wraps each operation of the :class:`~server.store.base.Store`
interface *on the instance*, so every part that already holds the store (ingest, state,
pipeline, sagas) is counted, and checks of the adapter's class elsewhere (retention is
SQLite-only) still see the adapter itself, which a wrapper object would hide. A lost
version race (:class:`~server.errors.VersionConflict`) is the optimistic-concurrency rule
working, not a failure, and is not counted.
"""

from __future__ import annotations

import functools
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
)
"""The ``operation`` label values of ``companion_store_errors``: the store interface."""

_MARK: Final = "_companion_counted"


def count_store_errors(store: Store, metrics: Metrics) -> None:
    """Count ``store``'s failures in ``metrics.store_errors``. Idempotent per store."""
    if getattr(store, _MARK, False):
        return
    for operation in OPERATIONS:
        method = getattr(store, operation, None)
        if method is not None:
            setattr(store, operation, _counted(operation, method, metrics))
    setattr(store, _MARK, True)
    for operation in OPERATIONS:  # every label exists from the start, at zero
        metrics.store_errors.labels(operation)


def _counted(
    operation: str, method: Callable[..., Awaitable[Any]], metrics: Metrics
) -> Callable[..., Awaitable[Any]]:
    counter = metrics.store_errors.labels(operation)

    @functools.wraps(method)
    async def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return await method(*args, **kwargs)
        except VersionConflict:
            raise
        except (StoreError, OSError, TimeoutError):
            counter.inc()
            raise

    return call
