"""The embedded store's tables and statements: the schema, the state row's columns and its
conditional writes, the usage ledger's statements, and the conversions between rows and the
store's records (:mod:`server.store.sqlite` runs them)."""

from __future__ import annotations

import sqlite3
from typing import Any

import aiosqlite
import orjson

from server.store import codec
from server.store.base import SERVICE_COSTS, Usage, UserState
from server.store.sqlite_commits import Statements

SCHEMA = """
CREATE TABLE IF NOT EXISTS user_state (
    user_id TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    state_hash TEXT NOT NULL,
    state TEXT NOT NULL,
    mood TEXT NOT NULL,
    energy INTEGER NOT NULL,
    reasoning TEXT NOT NULL,
    actions TEXT NOT NULL,
    source TEXT NOT NULL,
    image_url TEXT,
    avatar_status TEXT NOT NULL,
    video_url TEXT,
    video_status TEXT NOT NULL DEFAULT 'none',
    health TEXT,
    profile TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    epoch INTEGER NOT NULL DEFAULT 0,
    erased INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS user_state_avatar_status ON user_state (avatar_status);
CREATE TABLE IF NOT EXISTS avatar_cache (
    cache_hash TEXT PRIMARY KEY,
    image_url TEXT NOT NULL,
    video_url TEXT,
    prompt TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS usage (
    user_id TEXT NOT NULL,
    day TEXT NOT NULL,
    calls INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    cache_write_tokens INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens INTEGER NOT NULL DEFAULT 0,
    images_usd REAL NOT NULL DEFAULT 0,
    clips_usd REAL NOT NULL DEFAULT 0,
    storage_usd REAL NOT NULL DEFAULT 0,
    pushes_usd REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, day)
);
"""

HISTORY_SCHEMA = """
CREATE TABLE IF NOT EXISTS history (
    user_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    at INTEGER NOT NULL,
    payload BLOB NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, version)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS history_expires_at ON history (expires_at);
"""
"""The decision history: one row per committed version (:mod:`server.history`)."""

INSERT_HISTORY = (
    "INSERT OR IGNORE INTO history (user_id, version, at, payload, expires_at)"
    " SELECT ?, ?, ?, ?, ? WHERE EXISTS"
    " (SELECT 1 FROM user_state WHERE user_id = ? AND version >= ? AND erased = 0)"
)
"""One event, inserted only when its (user, version) is new and the user's state is at that
version or later (an event of an erased user is not written)."""

STATE_COLUMNS = (
    "user_id, version, state_hash, state, mood, energy, reasoning, actions, source,"
    " image_url, avatar_status, video_url, video_status, health, profile, updated_at, epoch,"
    " erased"
)

ADDED_STATE_COLUMNS = (
    ("video_url", "TEXT"),
    ("video_status", "TEXT NOT NULL DEFAULT 'none'"),
    ("epoch", "INTEGER NOT NULL DEFAULT 0"),
    ("erased", "INTEGER NOT NULL DEFAULT 0"),
    ("health", "TEXT"),
)
"""Columns added to ``user_state`` after its first release: :meth:`SQLiteStore.open` adds
them to a file made before them (``CREATE TABLE IF NOT EXISTS`` leaves an old table as it is)."""

STATE_NAMES = [name.strip() for name in STATE_COLUMNS.split(",")]
UPSERT = (
    f"INSERT INTO user_state ({STATE_COLUMNS}) VALUES ({', '.join('?' * len(STATE_NAMES))})"
    " ON CONFLICT (user_id) DO UPDATE SET"
    f" {', '.join(f'{name} = excluded.{name}' for name in STATE_NAMES[1:])}"
)
INSERT_STATE = (
    UPSERT + " WHERE user_state.erased = 1 AND user_state.version = 0"
    " AND user_state.epoch = excluded.epoch"
)
"""The first write of a user: no row yet, or a version-0 tombstone of the same erase epoch."""
UPDATE_STATE = (
    f"UPDATE user_state SET {', '.join(f'{name} = ?' for name in STATE_NAMES[1:])}"
    " WHERE user_id = ? AND version = ? AND epoch = ?"
)
SAME_PROFILE = " AND (erased = 1 OR profile = ?)"
"""The profile condition of a write that names the profile it read (a tombstone has none)."""
PROFILE_INDEX = STATE_NAMES.index("profile")
GROUP_STATEMENTS = Statements(INSERT_STATE, UPDATE_STATE, SAME_PROFILE)


LLM_COLUMNS = (
    "user_id, day, calls, input_tokens, output_tokens, cost_usd,"
    " cache_write_tokens, cache_read_tokens"
)
USAGE_COLUMNS = LLM_COLUMNS + ", " + ", ".join(SERVICE_COSTS)


ADD_SERVICE_COSTS = (
    f"INSERT INTO usage (user_id, day, calls, input_tokens, output_tokens, cost_usd,"
    f" {', '.join(SERVICE_COSTS)}) VALUES (?, ?, 0, 0, 0, 0, {', '.join('?' * len(SERVICE_COSTS))})"
    " ON CONFLICT (user_id, day) DO UPDATE SET"
    f" {', '.join(f'{name} = {name} + excluded.{name}' for name in SERVICE_COSTS)}"
)
"""Add a user-day's service costs (parameters: user, day, then one value per service)."""


def usage_of(row: sqlite3.Row) -> Usage:
    user_id, day, calls, input_tokens, output_tokens, cost, cache_write, cache_read = row[:8]
    return Usage(
        str(user_id),
        str(day),
        int(calls),
        int(input_tokens),
        int(output_tokens),
        float(cost),
        int(cache_write),
        int(cache_read),
        *(float(value) for value in row[8:]),
    )


def state_to_row(state: UserState, *, erased: bool = False) -> tuple[Any, ...]:
    data = codec.state_to_dict(state)
    data["actions"] = orjson.dumps(data["actions"]).decode()
    data["profile"] = orjson.dumps(data["profile"]).decode()
    if data["health"] is not None:
        data["health"] = orjson.dumps(data["health"]).decode()
    data["epoch"] = state.epoch
    data["erased"] = 1 if erased else 0
    return tuple(data[name] for name in STATE_NAMES)


def state_from_row(row: sqlite3.Row) -> UserState:
    data = dict(zip(STATE_NAMES, row, strict=True))
    del data["erased"]
    data["actions"] = orjson.loads(data["actions"])
    data["profile"] = orjson.loads(data["profile"])
    if data["health"] is not None:
        data["health"] = orjson.loads(data["health"])
    return codec.state_from_dict(data)


ADDED_USAGE_COLUMNS = (
    ("cache_write_tokens", "INTEGER NOT NULL DEFAULT 0"),
    ("cache_read_tokens", "INTEGER NOT NULL DEFAULT 0"),
    # the service costs, added after the prompt-cache columns
    *((name, "REAL NOT NULL DEFAULT 0") for name in SERVICE_COSTS),
)


async def add_missing_columns(
    writer: aiosqlite.Connection, table: str, added: tuple[tuple[str, str], ...]
) -> None:
    """Add the ``added`` (name, declaration) columns that ``table``, made by an older
    version, lacks. Raises :class:`sqlite3.Error` if an ALTER fails for another reason than
    a second process adding the same column first."""
    rows = await writer.execute_fetchall(f"PRAGMA table_info({table})")
    present = {str(row[1]) for row in rows}
    for name, declaration in added:
        if name not in present:
            try:
                await writer.execute(f"ALTER TABLE {table} ADD COLUMN {name} {declaration}")
            except sqlite3.OperationalError as error:
                # Another process opening the same file added it first.
                if "duplicate column" not in str(error):
                    raise
