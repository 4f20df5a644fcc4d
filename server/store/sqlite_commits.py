"""Group commits of the commit path's writes, each group one call on its own thread.

The commit path writes a user's state (one conditional statement) and, right after, its
history event (one conditional insert). Through aiosqlite every statement is a round trip
to its thread: a future, a queue, a wake-up of the event loop, ~15 % of the server's busy
time at 1,000 changes/s. :class:`GroupCommits` instead owns one ``sqlite3`` connection on a
single-thread executor (:meth:`asyncio.loop.run_in_executor`, a public API) and runs a whole
group there as one call: ``BEGIN IMMEDIATE``, every pending state write (its conditional
statement, and on a miss the read of what is stored, in the same transaction), every
pending row write (history events; the cost meter's usage additions, thousands of
user-days every ten seconds), ``COMMIT``. The event loop pays one hop per group, whatever
its size.

Groups: writes that arrive while a group is being committed wait for the next one, in
arrival order, so a burst costs one transaction and one fsync. A row write waits up to
:data:`ROW_WAIT_S` for a state write to ride with: a change's history event is written
after its state (its recorder hears the commit), so without the wait every change would
cost two groups.

Durability is the store's: the connection runs ``synchronous=FULL`` on the WAL file, and a
writer's future resolves only after the ``COMMIT`` (the fsync) returned. A group that
fails (``sqlite3.Error``, or the store not open) fails each of its writes with
:class:`~server.errors.StoreError`.

The store's other writes keep their aiosqlite connection; both take the store's one write
lock around their transactions, so they never wait on each other inside SQLite.
"""

from __future__ import annotations

import asyncio
import pathlib
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson

from brain.model import Profile
from server.errors import StoreError, VersionConflict
from server.store import codec


@dataclass(slots=True)
class StateWrite:
    """A conditional state write waiting for the next group: written only if the stored
    version is still ``expected`` (no row, or a version-0 tombstone, for 0), the stored
    erase epoch is the row's and, when ``profile`` is given, the stored profile is it."""

    row: Sequence[Any]
    user_id: str
    expected: int
    done: asyncio.Future[None]
    profile: Profile | None = None
    """The profile the writer read (``None``: no profile condition)."""
    profile_json: str | None = None
    """``profile`` as the row spells it, when the writer knows it (saves encoding it)."""


@dataclass(slots=True)
class RowWrite:
    """One statement waiting for the next group (a history event, a usage addition);
    ``done`` gets whether it changed a row (for a history event, ``False``: its version
    was recorded already, or the user is gone)."""

    sql: str
    row: Sequence[Any]
    done: asyncio.Future[bool]


@dataclass(frozen=True, slots=True)
class Statements:
    """The SQL of a group (defined by the store, whose schema they follow)."""

    insert_state: str
    """The first write of a user (parameters: the row)."""
    update_state: str
    """A later write (parameters: the row without its key, then key, version, epoch)."""
    same_profile: str
    """Appended to ``update_state`` for a write with a profile condition (one more value)."""


ROW_WAIT_S = 0.002
"""How long a row write (a history event, a usage addition) waits for a state write to ride
with, before it is committed on its own: under load, the next change's group carries the
last change's history event, so a change costs one group (one thread call, one fsync), not
two; when idle, the event is recorded 2 ms later."""


class GroupCommits:
    """The store's state writes and row writes (history events, usage additions), committed
    in groups on one thread.

    :meth:`open` before use; :meth:`put_state` and :meth:`put_row` raise
    :class:`~server.errors.StoreError` when the group fails or the writer is not open.
    """

    def __init__(self, path: pathlib.Path, lock: asyncio.Lock, statements: Statements) -> None:
        self._path = path
        self._lock = lock
        self._sql = statements
        self._executor: ThreadPoolExecutor | None = None
        self._connection: sqlite3.Connection | None = None
        self._states: list[StateWrite] = []
        self._rows: list[RowWrite] = []
        self._flush: asyncio.Task[None] | None = None
        self._rows_due: asyncio.TimerHandle | None = None
        """When the rows waiting without a state write are committed on their own."""

    async def open(self) -> None:
        """Open the connection on the commit thread. Raises :class:`sqlite3.Error`."""
        if self._connection is not None:
            return
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-commits")
        try:
            loop = asyncio.get_running_loop()
            self._connection = await loop.run_in_executor(executor, _connect, self._path)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        self._executor = executor

    async def close(self) -> None:
        """Commit what is pending, then close the connection and stop the thread."""
        while self._flush is not None or self._rows:
            if self._rows:  # rows left by the last group would wait for a timer: not now
                self._start(rows_due=True)
            if self._flush is not None:
                await asyncio.shield(self._flush)
        connection, executor = self._connection, self._executor
        self._connection = self._executor = None
        if connection is not None and executor is not None:
            await asyncio.get_running_loop().run_in_executor(executor, connection.close)
        if executor is not None:
            executor.shutdown(wait=False)

    async def put_state(self, write: StateWrite) -> None:
        """Write ``write`` in the next group. Raises :class:`VersionConflict` naming the
        version found when its condition does not hold, or :class:`StoreError`."""
        self._states.append(write)
        self._start()
        await write.done

    async def put_row(self, write: RowWrite) -> bool:
        """Run ``write``'s statement with the next group of state writes, or on its own
        after :data:`ROW_WAIT_S` when none comes; whether it changed a row. Raises
        :class:`StoreError`."""
        self._rows.append(write)
        self._wait_for_states()
        return await write.done

    def _wait_for_states(self) -> None:
        """Let the waiting rows ride with the next state write, for a while."""
        if self._flush is None and self._rows_due is None:
            loop = asyncio.get_running_loop()
            self._rows_due = loop.call_later(ROW_WAIT_S, self._start, True)

    def _start(self, rows_due: bool = False) -> None:
        if self._rows_due is not None:
            self._rows_due.cancel()
            self._rows_due = None
        if self._flush is None:
            groups = self._commit_groups(rows_due)
            self._flush = asyncio.create_task(groups, name="sqlite-commits")

    async def _commit_groups(self, rows_due: bool) -> None:
        """Commit groups while state writes wait (and once for rows alone when they are
        due); rows left then wait for the next state write."""
        loop = asyncio.get_running_loop()
        try:
            while self._states or (rows_due and self._rows):
                rows_due = False
                states, self._states = self._states, []
                rows, self._rows = self._rows, []
                state_outcomes: Sequence[BaseException | None]
                row_outcomes: list[bool | BaseException]
                try:
                    connection, executor = self._connection, self._executor
                    if connection is None or executor is None:
                        raise StoreError(f"SQLite store {self._path} is not open")
                    async with self._lock:
                        state_outcomes, changed = await loop.run_in_executor(
                            executor, _commit_group, connection, self._sql, states, rows
                        )
                    row_outcomes = list(changed)
                except (StoreError, sqlite3.Error) as error:
                    failure = (
                        error
                        if isinstance(error, StoreError)
                        else StoreError(f"SQLite write failed: {error}")
                    )
                    state_outcomes = [failure] * len(states)
                    row_outcomes = [failure] * len(rows)
                for write, outcome in zip(states, state_outcomes, strict=True):
                    _settle(write.done, outcome)
                for row, result in zip(rows, row_outcomes, strict=True):
                    _settle(row.done, result)
        finally:
            self._flush = None
            if self._rows:
                self._wait_for_states()


def _settle(done: asyncio.Future[Any], outcome: object) -> None:
    """Resolve a writer's future with ``outcome`` (raised when it is an exception), unless
    the writer went away."""
    if done.done():
        return
    if isinstance(outcome, BaseException):
        done.set_exception(outcome)
    else:
        done.set_result(outcome)


def _connect(path: pathlib.Path) -> sqlite3.Connection:
    """The commit connection (on the commit thread): explicit transactions, every commit
    fsynced (``synchronous=FULL``; the file is in WAL mode, set by the store's writer)."""
    # check_same_thread=False: the single-thread executor is the only user, and close()
    # runs there too; SQLite's own serialisation stays on (the default threading mode).
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("PRAGMA busy_timeout=5000")
    except BaseException:
        connection.close()
        raise
    return connection


def _commit_group(
    connection: sqlite3.Connection,
    sql: Statements,
    states: Sequence[StateWrite],
    rows: Sequence[RowWrite],
) -> tuple[list[VersionConflict | None], list[bool]]:
    """One transaction on the commit thread: the state writes in order, then the row
    writes; each state write's conflict (or ``None``) and whether each row write changed a
    row. Raises :class:`sqlite3.Error` (the transaction rolled back)."""
    # IMMEDIATE takes the write lock now, not at the first write, so another process on
    # the same file fails here (busy) rather than mid-transaction.
    connection.execute("BEGIN IMMEDIATE")
    try:
        conflicts = [_write_state(connection, sql, write) for write in states]
        changed = [connection.execute(w.sql, w.row).rowcount == 1 for w in rows]
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    return conflicts, changed


def _write_state(
    connection: sqlite3.Connection, sql: Statements, write: StateWrite
) -> VersionConflict | None:
    """One statement whose condition is the version, epoch and profile check; on a miss,
    the conflict naming the version found (read in the same transaction)."""
    condition = (write.user_id, write.expected, write.row[-2])  # row[-2]: the epoch
    if write.expected == 0:
        cursor = connection.execute(sql.insert_state, write.row)
    elif write.profile is None:
        cursor = connection.execute(sql.update_state, (*write.row[1:], *condition))
    else:
        profile = write.profile_json
        if profile is None:
            profile = orjson.dumps(codec.profile_to_dict(write.profile)).decode()
        cursor = connection.execute(
            sql.update_state + sql.same_profile, (*write.row[1:], *condition, profile)
        )
    if cursor.rowcount == 1:
        return None
    found = connection.execute(
        "SELECT version, epoch, erased, profile FROM user_state WHERE user_id = ?",
        (write.user_id,),
    ).fetchall()
    if not found:
        return VersionConflict(write.user_id, write.expected, None)
    version, epoch, erased, stored_profile = found[0]
    if (
        write.profile is not None
        and write.expected
        and (int(version), int(epoch), int(erased)) == (write.expected, write.row[-2], 0)
        and codec.profile_from_dict(orjson.loads(stored_profile)) == write.profile
    ):
        # The same profile, spelled otherwise (a row from an older release): compare with
        # its own spelling, in this same transaction.
        cursor = connection.execute(
            sql.update_state + sql.same_profile, (*write.row[1:], *condition, stored_profile)
        )
        if cursor.rowcount == 1:
            return None
    return VersionConflict(write.user_id, write.expected, int(version))
