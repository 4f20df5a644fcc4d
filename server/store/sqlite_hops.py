"""Acks across hops in the SQLite store: what each device has shown, and the commands.

:class:`SQLiteHops` is a part of :class:`~server.store.sqlite.SQLiteStore` (which inherits
it), kept in a module of its own the way the saga tables are. It uses the store's serialised
writer transaction and its reader connection, so the store's durability and concurrency
rules hold for these tables too. Settling a command is one conditional ``UPDATE``: only a
pending command takes an outcome, so the first result wins and a repeated one changes nothing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import aiosqlite
import orjson

from server.store.base import EXPIRED, PENDING, CommandRecord, DeviceSeen

HOPS_SCHEMA = """
CREATE TABLE IF NOT EXISTS device_seen (
    user_id TEXT NOT NULL,
    device TEXT NOT NULL,
    kind TEXT NOT NULL,
    version INTEGER NOT NULL,
    seen_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, device)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS commands (
    user_id TEXT NOT NULL,
    command_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    params TEXT NOT NULL,
    version INTEGER NOT NULL,
    issued_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    outcome_at INTEGER,
    device TEXT,
    PRIMARY KEY (user_id, command_id)
) WITHOUT ROWID;
"""
"""Per-device last-seen versions and the commands of users' actions."""

HOPS_TABLES = ("device_seen", "commands")
"""The tables a user's erasure empties of the user's rows."""

_COMMAND_COLUMNS = (
    "user_id, command_id, kind, params, version, issued_at, expires_at, outcome, outcome_at, device"
)


class _Database(Protocol):
    """What the hop methods use of the store."""

    def _transaction(self) -> AbstractAsyncContextManager[aiosqlite.Connection]: ...

    async def _read(self, sql: str, parameters: Sequence[Any] = ()) -> list[sqlite3.Row]: ...


class SQLiteHops:
    """The last-seen and command methods of the :class:`~server.store.base.Store`, on SQLite."""

    async def put_seen(self: _Database, seen: DeviceSeen) -> None:
        """Record ``seen``, replacing the device's earlier record."""
        async with self._transaction() as writer:
            await writer.execute(
                "INSERT OR REPLACE INTO device_seen (user_id, device, kind, version, seen_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (seen.user_id, seen.device, seen.kind, seen.version, seen.seen_at),
            )

    async def devices_seen(self: _Database, user_id: str) -> list[DeviceSeen]:
        """The user's devices, by name."""
        rows = await self._read(
            "SELECT device, kind, version, seen_at FROM device_seen WHERE user_id = ?"
            " ORDER BY device",
            (user_id,),
        )
        return [DeviceSeen(user_id, device, kind, v, at) for device, kind, v, at in rows]

    async def put_commands(self: _Database, commands: Sequence[CommandRecord]) -> None:
        """Record new commands; ids recorded already are left as they are."""
        if not commands:
            return
        async with self._transaction() as writer:
            await writer.executemany(
                f"INSERT OR IGNORE INTO commands ({_COMMAND_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [_row(command) for command in commands],
            )

    async def settle_command(
        self: _Database, user_id: str, command_id: str, outcome: str, *, device: str | None, at: int
    ) -> CommandRecord | None:
        """Settle a pending command once (``expired`` after its expiry), in one conditional
        UPDATE; the command as it is now, or ``None``."""
        async with self._transaction() as writer:
            await writer.execute(
                "UPDATE commands SET outcome = CASE WHEN expires_at < ? THEN ? ELSE ? END,"
                " outcome_at = ?, device = ? WHERE user_id = ? AND command_id = ? AND outcome = ?",
                (at, EXPIRED, outcome, at, device, user_id, command_id, PENDING),
            )
        rows = await self._read(
            f"SELECT {_COMMAND_COLUMNS} FROM commands WHERE user_id = ? AND command_id = ?",
            (user_id, command_id),
        )
        return _command_of(rows[0]) if rows else None

    async def commands_of(self: _Database, user_id: str, limit: int = 100) -> list[CommandRecord]:
        """The user's newest ``limit`` commands, newest first."""
        rows = await self._read(
            f"SELECT {_COMMAND_COLUMNS} FROM commands WHERE user_id = ?"
            " ORDER BY issued_at DESC, command_id LIMIT ?",
            (user_id, limit),
        )
        return [_command_of(row) for row in rows]


def _row(command: CommandRecord) -> tuple[Any, ...]:
    return (
        command.user_id,
        command.command_id,
        command.kind,
        orjson.dumps(dict(command.params)).decode(),
        command.version,
        command.issued_at,
        command.expires_at,
        command.outcome,
        command.outcome_at,
        command.device,
    )


def _command_of(row: sqlite3.Row | tuple[Any, ...]) -> CommandRecord:
    user_id, command_id, kind, params, version, issued, expires, outcome, at, device = row
    params = orjson.loads(params)
    return CommandRecord(
        user_id, command_id, kind, params, version, issued, expires, outcome, at, device
    )
