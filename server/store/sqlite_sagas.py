"""The durable avatar saga in the SQLite store: sagas in flight and the dead-letter list.

:class:`SQLiteSagas` is a part of :class:`~server.store.sqlite.SQLiteStore` (which inherits
it), kept in a module of its own so the saga tables are read in one place. It uses the
store's serialised writer transaction and its reader connection, so the store's
durability and concurrency rules hold for these tables too.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import aiosqlite

from server.store.base import DeadLetter, SagaRecord

SAGA_SCHEMA = """
CREATE TABLE IF NOT EXISTS avatar_sagas (
    user_id TEXT PRIMARY KEY,
    saga_id TEXT NOT NULL,
    cache_hash TEXT NOT NULL,
    owner TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    lease_until INTEGER NOT NULL,
    attempts INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS avatar_dead_letters (
    user_id TEXT NOT NULL,
    letter_key TEXT NOT NULL,
    failed_at INTEGER NOT NULL,
    saga_id TEXT NOT NULL,
    cache_hash TEXT NOT NULL,
    reason TEXT NOT NULL,
    state TEXT NOT NULL,
    mood TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    PRIMARY KEY (user_id, letter_key)
);
"""
"""The durable avatar saga: sagas in flight (one per user) and the dead-letter list."""

_SAGA_COLUMNS = "user_id, saga_id, cache_hash, owner, started_at, lease_until, attempts"
_LETTER_COLUMNS = "user_id, failed_at, saga_id, cache_hash, reason, state, mood, attempts"


class _Database(Protocol):
    """What the saga methods use of the store."""

    def _transaction(self) -> AbstractAsyncContextManager[aiosqlite.Connection]: ...

    async def _read(self, sql: str, parameters: Sequence[Any] = ()) -> list[sqlite3.Row]: ...


class SQLiteSagas:
    """The saga methods of the :class:`~server.store.base.Store` protocol, on SQLite."""

    async def put_saga(self: _Database, record: SagaRecord) -> None:
        """Record ``record``, replacing the user's earlier saga."""
        async with self._transaction() as writer:
            await writer.execute(
                f"INSERT OR REPLACE INTO avatar_sagas ({_SAGA_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    record.user_id,
                    record.saga_id,
                    record.cache_hash,
                    record.owner,
                    record.started_at,
                    record.lease_until,
                    record.attempts,
                ),
            )

    async def claim_saga(
        self: _Database, user_id: str, saga_id: str, owner: str, *, now_ms: int, lease_until: int
    ) -> SagaRecord | None:
        """Take the saga over in one conditional UPDATE; the claimed record or ``None``."""
        async with self._transaction() as writer:
            async with writer.execute(
                "UPDATE avatar_sagas SET owner = ?, lease_until = ?, attempts = attempts + 1"
                " WHERE user_id = ? AND saga_id = ? AND (owner = ? OR lease_until <= ?)"
                f" RETURNING {_SAGA_COLUMNS}",
                (owner, lease_until, user_id, saga_id, owner, now_ms),
            ) as cursor:
                row = await cursor.fetchone()
        return None if row is None else SagaRecord(*row)

    async def renew_saga(
        self: _Database, user_id: str, saga_id: str, owner: str, lease_until: int
    ) -> bool:
        """Extend ``owner``'s lease; ``False`` when the saga ended or changed hands."""
        async with self._transaction() as writer:
            cursor = await writer.execute(
                "UPDATE avatar_sagas SET lease_until = ?"
                " WHERE user_id = ? AND saga_id = ? AND owner = ?",
                (lease_until, user_id, saga_id, owner),
            )
            return cursor.rowcount == 1

    async def resumable_sagas(
        self: _Database, owner: str, *, now_ms: int, limit: int = 100
    ) -> list[SagaRecord]:
        """Sagas whose lease ended before ``now_ms`` or that ``owner`` holds, oldest first."""
        rows = await self._read(
            f"SELECT {_SAGA_COLUMNS} FROM avatar_sagas WHERE lease_until <= ? OR owner = ?"
            " ORDER BY started_at LIMIT ?",
            (now_ms, owner, limit),
        )
        return [SagaRecord(*row) for row in rows]

    async def end_saga(self: _Database, user_id: str, saga_id: str) -> None:
        """Delete the user's saga record if it is still ``saga_id``'s."""
        async with self._transaction() as writer:
            await writer.execute(
                "DELETE FROM avatar_sagas WHERE user_id = ? AND saga_id = ?", (user_id, saga_id)
            )

    async def add_dead_letter(self: _Database, letter: DeadLetter) -> None:
        """Keep ``letter`` (a repeat of the same key replaces it)."""
        async with self._transaction() as writer:
            await writer.execute(
                f"INSERT OR REPLACE INTO avatar_dead_letters (letter_key, {_LETTER_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    letter.key,
                    letter.user_id,
                    letter.failed_at,
                    letter.saga_id,
                    letter.cache_hash,
                    letter.reason,
                    letter.state,
                    letter.mood,
                    letter.attempts,
                ),
            )

    async def dead_letters(self: _Database, limit: int = 1000) -> list[DeadLetter]:
        """Up to ``limit`` dead letters, oldest first."""
        rows = await self._read(
            f"SELECT {_LETTER_COLUMNS} FROM avatar_dead_letters"
            " ORDER BY failed_at, user_id LIMIT ?",
            (limit,),
        )
        return [DeadLetter(*row) for row in rows]

    async def remove_dead_letter(self: _Database, user_id: str, key: str) -> None:
        """Delete one dead letter; nothing when it is gone already."""
        async with self._transaction() as writer:
            await writer.execute(
                "DELETE FROM avatar_dead_letters WHERE user_id = ? AND letter_key = ?",
                (user_id, key),
            )
