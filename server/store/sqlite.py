"""The embedded store: one SQLite file through aiosqlite, so a fresh machine needs nothing else.

Durability: the database runs in WAL mode with ``synchronous=FULL``. An ``ack`` promises
that the frames survive, and ``FULL`` makes every commit fsync the WAL before it returns, so
a committed frame survives a process kill, an OS crash and a power loss. ``NORMAL`` would
survive a process kill only (the last commits may roll back on power loss), which breaks
the promise on exactly the machines (laptops, small VMs) the embedded store is for. The
cost is one fsync per commit, which the caller amortises by batching frames:
:meth:`SQLiteStore.put_frames` writes a whole batch in one transaction.

Concurrency: two connections. Writes go through one writer connection, serialised by an
:class:`asyncio.Lock`, each in its own ``BEGIN IMMEDIATE`` transaction, so one coroutine's
rollback can never undo another's writes. Reads use a second connection, which in WAL mode
sees only committed data and never waits for the writer.

Frames are not deleted when their retention ends (SQLite has no TTL): reads leave them out,
and :meth:`SQLiteStore.purge_expired` deletes them when the server calls it.
"""

from __future__ import annotations

import asyncio
import pathlib
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiosqlite
import orjson

from brain.model import Frame
from server.errors import StoreError, VersionConflict
from server.store import codec
from server.store.base import AvatarCacheEntry, FrameRow, Usage, UserState
from server.store.sqlite_hops import HOPS_SCHEMA, HOPS_TABLES, SQLiteHops
from server.store.sqlite_sagas import SAGA_SCHEMA, SQLiteSagas

_SCHEMA = """
CREATE TABLE IF NOT EXISTS frames (
    user_id TEXT NOT NULL,
    sk TEXT NOT NULL,
    ts INTEGER NOT NULL,
    payload BLOB NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, sk)
) WITHOUT ROWID;
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
    profile TEXT NOT NULL,
    updated_at INTEGER NOT NULL
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
    PRIMARY KEY (user_id, day)
);
"""

_STATE_COLUMNS = (
    "user_id, version, state_hash, state, mood, energy, reasoning, actions, source,"
    " image_url, avatar_status, video_url, video_status, profile, updated_at"
)

_ADDED_STATE_COLUMNS = (
    ("video_url", "TEXT"),
    ("video_status", "TEXT NOT NULL DEFAULT 'none'"),
)
"""Columns added to ``user_state`` after its first release: :meth:`SQLiteStore.open` adds
them to a file made before them (``CREATE TABLE IF NOT EXISTS`` leaves an old table as it is)."""

_STATE_NAMES = [name.strip() for name in _STATE_COLUMNS.split(",")]
_INSERT_STATE = (
    f"INSERT INTO user_state ({_STATE_COLUMNS}) VALUES ({', '.join('?' * len(_STATE_NAMES))})"
    " ON CONFLICT (user_id) DO NOTHING"
)
_UPDATE_STATE = (
    f"UPDATE user_state SET {', '.join(f'{name} = ?' for name in _STATE_NAMES[1:])}"
    " WHERE user_id = ? AND version = ?"
)


@dataclass(slots=True)
class _StateWrite:
    """A conditional state write waiting for the next group commit."""

    row: Sequence[Any]
    user_id: str
    expected: int
    done: asyncio.Future[None]


class SQLiteStore(SQLiteSagas, SQLiteHops):
    """The :class:`~server.store.base.Store` in a SQLite file at ``path``.

    Frames are kept ``frame_retention_days`` after their ``ts``. Every method but
    :meth:`open` and :meth:`close` raises :class:`~server.errors.StoreError` when the store
    is not open or SQLite fails.
    """

    def __init__(self, path: pathlib.Path, *, frame_retention_days: int = 30) -> None:
        self._path = path
        self._retention_days = frame_retention_days
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        # State writes waiting for the next group commit, and the task committing them.
        self._pending_states: list[_StateWrite] = []
        self._state_flush: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Open (creating the file, directories and tables if needed). Idempotent."""
        if self._writer is not None:
            return
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            async with AsyncExitStack() as opened:  # closes what was opened if a step fails
                # isolation_level=None: no implicit transactions; each write says BEGIN.
                writer = await aiosqlite.connect(self._path, isolation_level=None)
                opened.push_async_callback(writer.close)
                await writer.execute("PRAGMA journal_mode=WAL")
                await writer.execute("PRAGMA synchronous=FULL")
                await writer.execute("PRAGMA busy_timeout=5000")
                await writer.executescript(_SCHEMA)
                await writer.executescript(SAGA_SCHEMA)
                await writer.executescript(HOPS_SCHEMA)
                await _add_missing_columns(writer)
                reader = await aiosqlite.connect(self._path, isolation_level=None)
                opened.push_async_callback(reader.close)
                await reader.execute("PRAGMA busy_timeout=5000")
                opened.pop_all()
        except (OSError, sqlite3.Error) as error:
            raise StoreError(f"cannot open SQLite store {self._path}: {error}") from error
        self._writer, self._reader = writer, reader

    async def close(self) -> None:
        """Close both connections (after pending state writes). Idempotent."""
        if self._state_flush is not None:
            await asyncio.shield(self._state_flush)
        writer, reader = self._writer, self._reader
        self._writer = self._reader = None
        for connection in (reader, writer):
            if connection is not None:
                await connection.close()

    def _connections(self) -> tuple[aiosqlite.Connection, aiosqlite.Connection]:
        if self._writer is None or self._reader is None:
            raise StoreError(f"SQLite store {self._path} is not open")
        return self._writer, self._reader

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """The writer connection inside one committed-or-rolled-back transaction."""
        writer, _ = self._connections()
        async with self._write_lock:
            try:
                # IMMEDIATE takes the write lock now, not at the first write, so another
                # process on the same file fails here (busy) rather than mid-transaction.
                await writer.execute("BEGIN IMMEDIATE")
                try:
                    yield writer
                except BaseException:
                    await writer.rollback()
                    raise
                await writer.commit()
            except sqlite3.Error as error:
                raise StoreError(f"SQLite write failed: {error}") from error

    async def _read(self, sql: str, parameters: Sequence[Any] = ()) -> list[sqlite3.Row]:
        _, reader = self._connections()
        try:
            return list(await reader.execute_fetchall(sql, parameters))
        except sqlite3.Error as error:
            raise StoreError(f"SQLite read failed: {error}") from error

    async def ping(self) -> None:
        """Raise :class:`~server.errors.StoreError` unless the database answers."""
        await self._read("SELECT 1")

    async def put_frames(self, rows: Sequence[FrameRow]) -> None:
        """Write the rows in one transaction; a key that exists already keeps its frame."""
        if not rows:
            return
        values = [
            (
                user_id,
                frame.key,
                frame.ts,
                codec.encode_frame(frame),
                codec.expires_at(frame, self._retention_days),
            )
            for user_id, frame in rows
        ]
        async with self._transaction() as writer:
            await writer.executemany(
                "INSERT OR IGNORE INTO frames (user_id, sk, ts, payload, expires_at)"
                " VALUES (?, ?, ?, ?, ?)",
                values,
            )

    async def frames_between(
        self, user_id: str, start_ms: int, end_ms: int, *, now_ms: int
    ) -> list[Frame]:
        """The user's unexpired frames with ``start_ms <= ts < end_ms``, oldest first."""
        rows = await self._read(
            "SELECT payload FROM frames WHERE user_id = ? AND ts >= ? AND ts < ?"
            " AND expires_at >= ? ORDER BY sk",
            (user_id, start_ms, end_ms, now_ms // 1000),
        )
        return [codec.decode_frame(row[0]) for row in rows]

    async def purge_expired(self, now_ms: int) -> int:
        """Delete frames whose retention ended before ``now_ms``; return how many."""
        async with self._transaction() as writer:
            cursor = await writer.execute(
                "DELETE FROM frames WHERE expires_at < ?", (now_ms // 1000,)
            )
            return cursor.rowcount

    async def get_state(self, user_id: str) -> UserState | None:
        """The user's state, or ``None`` when none was ever written."""
        rows = await self._read(
            f"SELECT {_STATE_COLUMNS} FROM user_state WHERE user_id = ?", (user_id,)
        )
        return _state_from_row(rows[0]) if rows else None

    async def put_state(self, state: UserState, expected_version: int) -> None:
        """Write ``state`` if the stored version is ``expected_version`` (0: no row).

        Writes that arrive while another group is being committed share the next
        transaction (one fsync for many users); each keeps its own version check, in
        arrival order. Raises :class:`~server.errors.VersionConflict` naming the version
        found, or :class:`~server.errors.StoreError`.
        """
        done = asyncio.get_running_loop().create_future()
        write = _StateWrite(_state_to_row(state), state.user_id, expected_version, done)
        self._pending_states.append(write)
        if self._state_flush is None:
            self._state_flush = asyncio.create_task(self._flush_states(), name="sqlite-states")
        await done

    async def _flush_states(self) -> None:
        try:
            while self._pending_states:
                batch, self._pending_states = self._pending_states, []
                outcomes: list[BaseException | None] = []
                try:
                    async with self._transaction() as writer:
                        for write in batch:
                            outcomes.append(await self._write_state(writer, write))
                except (StoreError, sqlite3.Error) as error:
                    failure = error if isinstance(error, StoreError) else StoreError(str(error))
                    outcomes = [failure] * len(batch)
                for write, outcome in zip(batch, outcomes, strict=True):
                    if write.done.done():  # the caller went away
                        continue
                    if outcome is None:
                        write.done.set_result(None)
                    else:
                        write.done.set_exception(outcome)
        finally:
            self._state_flush = None

    @staticmethod
    async def _write_state(
        writer: aiosqlite.Connection, write: _StateWrite
    ) -> VersionConflict | None:
        """One statement whose condition is the version check: the row is written only if
        its version is still ``write.expected`` (no row at all for 0)."""
        if write.expected == 0:
            cursor = await writer.execute(_INSERT_STATE, write.row)
        else:
            cursor = await writer.execute(
                _UPDATE_STATE, (*write.row[1:], write.user_id, write.expected)
            )
        if cursor.rowcount == 1:
            return None
        found = await writer.execute_fetchall(
            "SELECT version FROM user_state WHERE user_id = ?", (write.user_id,)
        )
        shown = None if not found else int(next(iter(found))[0])
        return VersionConflict(write.user_id, write.expected, shown)

    async def users_with_avatar_status(self, status: str, limit: int = 1000) -> list[str]:
        """Ids of up to ``limit`` users whose ``avatar_status`` is ``status``."""
        rows = await self._read(
            "SELECT user_id FROM user_state WHERE avatar_status = ? ORDER BY user_id LIMIT ?",
            (status, limit),
        )
        return [str(row[0]) for row in rows]

    async def get_avatar(self, cache_hash: str) -> AvatarCacheEntry | None:
        """The cached avatar for ``cache_hash``, or ``None``."""
        rows = await self._read(
            "SELECT cache_hash, image_url, prompt, created_at, video_url"
            " FROM avatar_cache WHERE cache_hash = ?",
            (cache_hash,),
        )
        if not rows:
            return None
        cache_hash, image_url, prompt, created_at, video_url = rows[0]
        return AvatarCacheEntry(cache_hash, image_url, prompt, created_at, video_url)

    async def put_avatar(self, entry: AvatarCacheEntry) -> None:
        """Store ``entry``, replacing an earlier entry for the same hash."""
        async with self._transaction() as writer:
            await writer.execute(
                "INSERT OR REPLACE INTO avatar_cache"
                " (cache_hash, image_url, video_url, prompt, created_at) VALUES (?, ?, ?, ?, ?)",
                (
                    entry.cache_hash,
                    entry.image_url,
                    entry.video_url,
                    entry.prompt,
                    entry.created_at,
                ),
            )

    async def add_usage(
        self,
        user_id: str,
        day: str,
        *,
        calls: int,
        input_tokens: int,
        output_tokens: int,
        cost_usd: float,
    ) -> Usage:
        """Add to the user's usage of ``day`` in one statement; return the new totals."""
        async with self._transaction() as writer:
            async with writer.execute(
                "INSERT INTO usage (user_id, day, calls, input_tokens, output_tokens, cost_usd)"
                " VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (user_id, day) DO UPDATE SET"
                " calls = calls + excluded.calls,"
                " input_tokens = input_tokens + excluded.input_tokens,"
                " output_tokens = output_tokens + excluded.output_tokens,"
                " cost_usd = cost_usd + excluded.cost_usd"
                " RETURNING calls, input_tokens, output_tokens, cost_usd",
                (user_id, day, calls, input_tokens, output_tokens, cost_usd),
            ) as cursor:
                row = await cursor.fetchone()
        if row is None:  # RETURNING always yields the row; this guards against a bad SQLite
            raise StoreError(f"usage of {user_id!r} on {day} was not returned")
        return Usage(user_id, day, int(row[0]), int(row[1]), int(row[2]), float(row[3]))

    async def get_usage(self, user_id: str, day: str) -> Usage:
        """The user's usage on ``day``, zeros when there is none."""
        rows = await self._read(
            "SELECT calls, input_tokens, output_tokens, cost_usd FROM usage"
            " WHERE user_id = ? AND day = ?",
            (user_id, day),
        )
        if not rows:
            return Usage(user_id, day)
        calls, input_tokens, output_tokens, cost = rows[0]
        return Usage(user_id, day, calls, input_tokens, output_tokens, float(cost))

    async def export_user(self, user_id: str, *, now_ms: int) -> dict[str, Any]:
        """Everything stored about the user (unexpired frames), as JSON-ready data."""
        state = await self.get_state(user_id)
        frame_rows = await self._read(
            "SELECT payload FROM frames WHERE user_id = ? AND expires_at >= ? ORDER BY sk",
            (user_id, now_ms // 1000),
        )
        usage_rows = await self._read(
            "SELECT day, calls, input_tokens, output_tokens, cost_usd FROM usage"
            " WHERE user_id = ? ORDER BY day",
            (user_id,),
        )
        frames = [codec.decode_frame(row[0]) for row in frame_rows]
        usage = [Usage(user_id, day, c, i, o, float(cost)) for day, c, i, o, cost in usage_rows]
        return codec.export_document(user_id, state, frames, usage)

    async def delete_user(self, user_id: str) -> int:
        """Delete the user's frames, state and usage in one transaction; return the count."""
        deleted = 0
        async with self._transaction() as writer:
            tables = ("frames", "user_state", "usage", "avatar_sagas", "avatar_dead_letters")
            for table in (*tables, *HOPS_TABLES):
                cursor = await writer.execute(f"DELETE FROM {table} WHERE user_id = ?", (user_id,))
                deleted += cursor.rowcount
        return deleted


def _state_to_row(state: UserState) -> tuple[Any, ...]:
    data = codec.state_to_dict(state)
    data["actions"] = orjson.dumps(data["actions"]).decode()
    data["profile"] = orjson.dumps(data["profile"]).decode()
    return tuple(data[name] for name in _STATE_NAMES)


def _state_from_row(row: sqlite3.Row) -> UserState:
    data = dict(zip(_STATE_NAMES, row, strict=True))
    data["actions"] = orjson.loads(data["actions"])
    data["profile"] = orjson.loads(data["profile"])
    return codec.state_from_dict(data)


async def _add_missing_columns(writer: aiosqlite.Connection) -> None:
    """Add the :data:`_ADDED_STATE_COLUMNS` an older ``user_state`` table lacks."""
    rows = await writer.execute_fetchall("PRAGMA table_info(user_state)")
    present = {str(row[1]) for row in rows}
    for name, declaration in _ADDED_STATE_COLUMNS:
        if name not in present:
            try:
                await writer.execute(f"ALTER TABLE user_state ADD COLUMN {name} {declaration}")
            except sqlite3.OperationalError as error:
                # Another process opening the same file added it first.
                if "duplicate column" not in str(error):
                    raise
