"""Frame retention for stores without a TTL of their own (SQLite).

DynamoDB deletes expired frames itself (the ``expires_at`` TTL attribute); SQLite does not,
so this stage deletes them once at start and then every :data:`INTERVAL_S` seconds. Reads
already leave expired frames out; this keeps the file from growing without end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import AsyncExitStack

from server.services import Services
from server.store.sqlite import SQLiteStore

log = logging.getLogger(__name__)

INTERVAL_S = 3600.0


async def purge_once(services: Services) -> int:
    """Delete the expired frames now; return how many (0 for stores with their own TTL)."""
    store = services.store
    if not isinstance(store, SQLiteStore):
        return 0
    deleted = await store.purge_expired(services.now_ms())
    if deleted:
        log.info("retention: deleted %d expired frames", deleted)
    return deleted


async def retention_stage(services: Services, stack: AsyncExitStack) -> None:
    """Purge expired frames periodically while the app runs (SQLite only)."""
    if not isinstance(services.store, SQLiteStore):
        return

    async def run() -> None:
        while True:
            try:
                await purge_once(services)
            except Exception:
                log.exception("retention: purge failed; trying again next interval")
            await asyncio.sleep(INTERVAL_S)

    task = asyncio.create_task(run(), name="retention")

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    stack.push_async_callback(stop)
