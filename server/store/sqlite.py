"""The embedded store: one SQLite file through aiosqlite, so a fresh machine needs nothing else.

Durability: the database runs in WAL mode with ``synchronous=FULL``. An ``ack`` promises
that the frames survive, and ``FULL`` makes every commit fsync the WAL before it returns, so
a committed frame survives a process kill, an OS crash and a power loss. ``NORMAL`` would
survive a process kill only (the last commits may roll back on power loss), which breaks
the promise on exactly the machines (laptops, small VMs) the embedded store is for. The
cost is one fsync per commit, which the caller amortises by batching frames:
:meth:`SQLiteStore.put_frames` writes a whole batch in one transaction.

Concurrency: three connections. The commit path's writes (state rows and history events)
are group-committed on a connection of their own, each group one call on its thread
(:mod:`server.store.sqlite_commits`); every other write goes through the aiosqlite writer
connection. Both take one :class:`asyncio.Lock` around each ``BEGIN IMMEDIATE``
transaction, so one coroutine's rollback can never undo another's writes. Reads use a
third connection, which in WAL mode sees only committed data and never waits for a writer.

Frames are packed, one row per (user, device, minute) in ``frame_buckets`` (more parts
when a device sends over :data:`~server.store.frame_buckets.PART_FRAMES` frames a minute;
see :mod:`server.store.frame_buckets`): ~10 bytes a frame instead of ~220. A write appends
to the rows of each device's current minute, remembered from the last write, in one
``executemany`` (:func:`~server.store.sqlite_frames.add_frames`). A file written by an
older version (one row per frame in ``frames``) is packed when it is opened.

Frames are not deleted when their retention ends (SQLite has no TTL): reads leave them out,
and :meth:`SQLiteStore.purge_expired` deletes them when the server calls it.
History events likewise: reads leave expired ones out, and
:meth:`SQLiteStore.purge_expired_history` deletes them (:mod:`server.history` calls it).
"""

from __future__ import annotations

import asyncio
import pathlib
import sqlite3
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from typing import Any

import aiosqlite

from brain.model import Frame, Profile
from server.errors import StoreError
from server.store import (
    codec,
    frame_buckets as buckets,
    history_codec,
    sqlite_frames as frames,
    sqlite_schema as schema,
)
from server.store.base import (
    SERVICE_COSTS,
    AvatarCacheEntry,
    FrameRow,
    HistoryEvent,
    HistoryQuery,
    Tombstone,
    Usage,
    UserState,
)
from server.store.open_buckets import OpenBuckets
from server.store.sqlite_commits import GroupCommits, RowWrite, StateWrite
from server.store.sqlite_hops import HOPS_SCHEMA, HOPS_TABLES, SQLiteHops
from server.store.sqlite_sagas import SAGA_SCHEMA, SQLiteSagas

_END_OF_TIME = 10**13
"""An ``end_ms`` after every frame (13-digit epoch milliseconds reach the year 2286)."""


class SQLiteStore(SQLiteSagas, SQLiteHops):
    """The :class:`~server.store.base.Store` in a SQLite file at ``path``.

    Frames are kept ``frame_retention_days`` after their ``ts``. Every method but
    :meth:`open` and :meth:`close` raises :class:`~server.errors.StoreError` when the store
    is not open or SQLite fails.
    """

    def __init__(
        self,
        path: pathlib.Path,
        *,
        frame_retention_days: int = 30,
        history_retention_days: int = 90,
    ) -> None:
        self._path = path
        self._retention_days = frame_retention_days
        self._history_retention_days = history_retention_days
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._open_buckets = OpenBuckets()
        # State writes and history events: group-committed, each group one thread call.
        self._commits = GroupCommits(path, self._write_lock, schema.GROUP_STATEMENTS)

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
                await writer.executescript(frames.SCHEMA + schema.SCHEMA)
                await writer.executescript(SAGA_SCHEMA)
                await frames.migrate_frame_rows(writer, self._retention_days)
                await writer.executescript(schema.HISTORY_SCHEMA)
                await writer.executescript(HOPS_SCHEMA)
                await schema.add_missing_columns(writer, "user_state", schema.ADDED_STATE_COLUMNS)
                await schema.add_missing_columns(writer, "usage", schema.ADDED_USAGE_COLUMNS)
                reader = await aiosqlite.connect(self._path, isolation_level=None)
                opened.push_async_callback(reader.close)
                await reader.execute("PRAGMA busy_timeout=5000")
                await self._commits.open()
                opened.push_async_callback(self._commits.close)
                opened.pop_all()
        except (OSError, sqlite3.Error) as error:
            raise StoreError(f"cannot open SQLite store {self._path}: {error}") from error
        self._writer, self._reader = writer, reader
        self._open_buckets.clear()  # the file may have been written while it was closed

    async def close(self) -> None:
        """Close the connections (after pending state writes and history events).
        Idempotent."""
        await self._commits.close()
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
        """Add the rows to their minute buckets in one transaction (one fsync).

        A frame whose key is stored already keeps the stored frame; only the parts that
        gain frames are written, each gaining a chunk (:mod:`server.store.frame_buckets`),
        all in one ``executemany``. The parts of each device's current bucket are
        remembered (:class:`~server.store.open_buckets.OpenBuckets`): this store is the
        only writer of its file, so the next write of the minute reads nothing.
        """
        if not rows:
            return
        grouped = buckets.group((i, user_id, frame) for i, (user_id, frame) in enumerate(rows))
        new = {bucket: [frame for _, frame in indexed] for bucket, indexed in grouped.items()}
        try:
            async with self._transaction() as writer:
                await frames.add_frames(writer, self._open_buckets, new, self._retention_days)
        except BaseException:
            # What was remembered for these buckets may not have been committed.
            for bucket in new:
                self._open_buckets.forget(bucket)
            raise

    async def frames_between(
        self, user_id: str, start_ms: int, end_ms: int, *, now_ms: int
    ) -> list[Frame]:
        """The user's unexpired frames with ``start_ms <= ts < end_ms``, oldest first."""
        if end_ms <= start_ms:
            return []
        rows = await self._read(*frames.range_query(user_id, start_ms, end_ms, now_ms))
        return frames.frames_of_rows(rows, start_ms, end_ms, now_ms, self._retention_days)

    async def purge_expired(self, now_ms: int) -> int:
        """Delete bucket parts whose every frame's retention ended before ``now_ms``; return
        how many frames they held (a part goes at most a minute after its oldest frame)."""
        async with self._transaction() as writer:
            self._open_buckets.clear()  # a purged part may be one of them
            cursor = await writer.execute(
                "DELETE FROM frame_buckets WHERE expires_at < ? RETURNING count",
                (now_ms // 1000,),
            )
            return sum(int(row[0]) for row in await cursor.fetchall())

    async def get_state(self, user_id: str) -> UserState | None:
        """The user's state, or ``None`` when none was written (since the last erase)."""
        rows = await self._read(
            f"SELECT {schema.STATE_COLUMNS} FROM user_state WHERE user_id = ? AND erased = 0",
            (user_id,),
        )
        return schema.state_from_row(rows[0]) if rows else None

    async def tombstone(self, user_id: str) -> Tombstone:
        """The user's tombstone (``Tombstone()`` when never erased)."""
        rows = await self._read(
            "SELECT version, epoch, updated_at FROM user_state WHERE user_id = ? AND erased = 1",
            (user_id,),
        )
        return Tombstone(*(int(v) for v in rows[0])) if rows else Tombstone()

    async def put_state(
        self, state: UserState, expected_version: int, *, expected_profile: Profile | None = None
    ) -> None:
        """Write ``state`` if the stored version is ``expected_version`` (0: no row; a
        tombstone's version after an erase), the stored erase epoch is ``state.epoch`` and
        (when given) the stored profile is ``expected_profile``.

        Writes that arrive while another group is being committed share the next
        transaction (one fsync for many users); each keeps its own version check, in
        arrival order. Raises :class:`~server.errors.VersionConflict` naming the version
        found, or :class:`~server.errors.StoreError`.
        """
        row = schema.state_to_row(state)
        profile_json = None
        if expected_profile is not None and expected_profile == state.profile:
            profile_json = row[schema.PROFILE_INDEX]  # the condition spells it as the row does
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._commits.put_state(
            StateWrite(row, state.user_id, expected_version, done, expected_profile, profile_json)
        )

    async def users_with_avatar_status(self, status: str, limit: int = 1000) -> list[str]:
        """Ids of up to ``limit`` users whose ``avatar_status`` is ``status``."""
        rows = await self._read(
            "SELECT user_id FROM user_state WHERE avatar_status = ? AND erased = 0"
            " ORDER BY user_id LIMIT ?",
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
        cache_write_tokens: int = 0,
        cache_read_tokens: int = 0,
    ) -> Usage:
        """Add to the user's usage of ``day`` in one statement; return the new totals."""
        async with self._transaction() as writer:
            async with writer.execute(
                f"INSERT INTO usage ({schema.LLM_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (user_id, day) DO UPDATE SET"
                " calls = calls + excluded.calls,"
                " input_tokens = input_tokens + excluded.input_tokens,"
                " output_tokens = output_tokens + excluded.output_tokens,"
                " cost_usd = cost_usd + excluded.cost_usd,"
                " cache_write_tokens = cache_write_tokens + excluded.cache_write_tokens,"
                " cache_read_tokens = cache_read_tokens + excluded.cache_read_tokens"
                f" RETURNING {schema.USAGE_COLUMNS}",
                (
                    user_id,
                    day,
                    calls,
                    input_tokens,
                    output_tokens,
                    cost_usd,
                    cache_write_tokens,
                    cache_read_tokens,
                ),
            ) as cursor:
                row = await cursor.fetchone()
        if row is None:  # RETURNING always yields the row; this guards against a bad SQLite
            raise StoreError(f"usage of {user_id!r} on {day} was not returned")
        return schema.usage_of(row)

    async def add_service_costs(self, user_id: str, day: str, costs: Mapping[str, float]) -> None:
        """Add to the user's service costs of ``day`` in one statement, in the commit path's
        next group (:mod:`server.store.sqlite_commits`): a flush of many user-days at once
        is a few transactions, not one each. Raises :class:`ValueError` for a cost that is
        not a service's, and :class:`~server.errors.StoreError`."""
        unknown = set(costs) - set(SERVICE_COSTS)
        if unknown:
            raise ValueError(f"not a service cost: {sorted(unknown)}")
        values = [float(costs.get(name, 0.0)) for name in SERVICE_COSTS]
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        await self._commits.put_row(
            RowWrite(schema.ADD_SERVICE_COSTS, (user_id, day, *values), done)
        )

    async def get_usage(self, user_id: str, day: str) -> Usage:
        """The user's usage on ``day``, zeros when there is none."""
        rows = await self._read(
            f"SELECT {schema.USAGE_COLUMNS} FROM usage WHERE user_id = ? AND day = ?",
            (user_id, day),
        )
        return schema.usage_of(rows[0]) if rows else Usage(user_id, day)

    async def export_user(self, user_id: str, *, now_ms: int) -> dict[str, Any]:
        """Everything stored about the user (unexpired frames), as JSON-ready data."""
        state = await self.get_state(user_id)
        found = await self.frames_between(user_id, 0, _END_OF_TIME, now_ms=now_ms)
        usage_rows = await self._read(
            f"SELECT {schema.USAGE_COLUMNS} FROM usage WHERE user_id = ? ORDER BY day", (user_id,)
        )
        usage = [schema.usage_of(row) for row in usage_rows]
        return codec.export_document(user_id, state, found, usage)

    async def delete_user(self, user_id: str, *, at_ms: int | None = None) -> int:
        """Delete the user's frames, usage, saga and dead letters, and replace their state by
        a tombstone of the next erase epoch (one version on from a live state, so the blank
        state is news; a tombstone's version kept) stamped ``at_ms`` (``None``: now), in one
        transaction; return the count (frames counted one by one, not by bucket; a live
        state counts one)."""
        erased_at = int(time.time() * 1000) if at_ms is None else at_ms
        deleted = 0
        async with self._transaction() as writer:
            self._open_buckets.forget_user(user_id)
            cursor = await writer.execute(
                "DELETE FROM frame_buckets WHERE user_id = ? RETURNING count", (user_id,)
            )
            deleted += sum(int(row[0]) for row in await cursor.fetchall())
            for table in ("usage", "avatar_sagas", "avatar_dead_letters", *HOPS_TABLES):
                cursor = await writer.execute(f"DELETE FROM {table} WHERE user_id = ?", (user_id,))
                deleted += cursor.rowcount
            found = list(
                await writer.execute_fetchall(
                    "SELECT version, epoch, erased FROM user_state WHERE user_id = ?", (user_id,)
                )
            )
            version, epoch, erased = (int(v) for v in found[0]) if found else (0, 0, 1)
            # A live state's blank successor is news to devices that saw it: one version on.
            version += 0 if erased else 1
            tombstone = replace(
                UserState.initial(user_id), version=version, epoch=epoch + 1, updated_at=erased_at
            )
            await writer.execute(schema.UPSERT, schema.state_to_row(tombstone, erased=True))
        return deleted + (0 if erased else 1)

    async def put_history(self, event: HistoryEvent) -> bool:
        """Insert the event in one statement whose condition is the state's version: no
        row when the (user, version) has one already or the user's state is gone or older
        (erased). Returns whether a row was inserted.

        Like :meth:`put_state`, events that arrive while another group is being written
        share the next transaction: a burst of commits costs one fsync, not one each.
        Raises :class:`~server.errors.StoreError`.
        """
        row = (
            event.user_id,
            event.version,
            event.at,
            history_codec.encode_event(event),
            history_codec.expires_at(event, self._history_retention_days),
            event.user_id,
            event.version,
        )
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        return await self._commits.put_row(RowWrite(schema.INSERT_HISTORY, row, done))

    async def history(
        self, user_id: str, query: HistoryQuery, *, now_ms: int
    ) -> list[HistoryEvent]:
        """The user's unexpired history events that ``query`` selects, newest first."""
        sql = "SELECT payload FROM history WHERE user_id = ? AND expires_at >= ?"
        parameters: list[Any] = [user_id, now_ms // 1000]
        for bound, condition in (
            (query.before_version, " AND version < ?"),
            (query.since_version, " AND version > ?"),
            (query.before_ms, " AND at < ?"),
            (query.since_ms, " AND at >= ?"),
        ):
            if bound is not None:
                sql += condition
                parameters.append(bound)
        rows = await self._read(sql + " ORDER BY version DESC LIMIT ?", (*parameters, query.limit))
        return [history_codec.decode_event(user_id, row[0]) for row in rows]

    async def delete_history(self, user_id: str) -> int:
        """Delete every history row of the user; return how many."""
        async with self._transaction() as writer:
            cursor = await writer.execute("DELETE FROM history WHERE user_id = ?", (user_id,))
            return cursor.rowcount

    async def purge_expired_history(self, now_ms: int) -> int:
        """Delete history events whose retention ended before ``now_ms``; return how many."""
        async with self._transaction() as writer:
            cursor = await writer.execute(
                "DELETE FROM history WHERE expires_at < ?", (now_ms // 1000,)
            )
            return cursor.rowcount
