"""The phone bridge's journal: every frame not yet acknowledged, in an fsync'd file.

A phone must not lose a reading because the server, the network or the phone itself went
down. The bridge therefore writes each batch of frames it takes from its source to this
append-only file (one ``fsync`` per batch) *before* sending it, records acks as they
arrive, and on start replays the file: what was added and not acked is sent again. The
server stores frames by their key (ts, device, seq), so a frame sent twice lands once.

The file is JSON lines, one record each:

- ``{"op": "base", "next_id": N, "cursor": C}``: first record after a compaction;
- ``{"op": "add", "ids": [...], "frames": [...], "cursor": C}``: frames taken from the
  source, and the source position after them (so a restarted bridge resumes there);
- ``{"op": "ack", "ids": [[lo, hi], ...]}``: frames the server has made durable.

Acked records are dropped by compaction (rewrite to a temporary file, fsync, rename, fsync
the directory), run once the file is past ``compact_bytes`` and either everything is acked
or ``compact_after`` acks were written since the last compaction: rare enough to cost
little, often enough to keep the file near the size of what is pending. A torn last line
(a crash mid-write) is cut off on open; damage anywhere else raises :class:`JournalCorrupt`.
Pending frames are bounded (:class:`JournalFull`), and a lock file keeps a second bridge
off the same journal (:class:`JournalLocked`).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson

DEFAULT_MAX_PENDING = 100_000
"""Unacked frames kept at most (about 15 MB of JSON); past it the bridge stops reading."""
_CHUNK = 500


class JournalError(Exception):
    """Base of the journal's errors."""


class JournalLocked(JournalError):
    """Another process holds the journal."""


class JournalCorrupt(JournalError):
    """A record before the last line cannot be read: the file was damaged."""


class JournalFull(JournalError):
    """Appending would keep more unacked frames than the bound allows."""


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so a crash leaves either the old or the new file.

    Raises :class:`OSError` when the directory is not writable.
    """
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _ranges(ids: Iterable[int]) -> list[list[int]]:
    """Sorted ids as inclusive ``[lo, hi]`` runs: ``[1, 2, 3, 7]`` → ``[[1, 3], [7, 7]]``."""
    runs: list[list[int]] = []
    for i in sorted(ids):
        if runs and runs[-1][1] == i - 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return runs


class Journal:
    """Unacked frames (wire dicts) by id, mirrored in an append-only file at ``path``."""

    def __init__(
        self,
        path: Path,
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
        compact_bytes: int = 256 * 1024,
        compact_after: int = 200,
    ) -> None:
        if max_pending < 1 or compact_after < 1 or compact_bytes < 0:
            raise ValueError("max_pending and compact_after must be positive")
        self.path = path
        self.max_pending = max_pending
        self.compact_bytes = compact_bytes
        self.compact_after = compact_after
        self.cursor: Any = None
        """The source position after the last appended frames (``None``: from the start)."""
        self.compactions = 0
        self._pending: dict[int, dict[str, Any]] = {}
        self._next_id = 1
        self._acked_records = 0
        self._size = 0
        self._fd: int | None = None
        self._lock_fd: int | None = None

    # -- lifecycle ------------------------------------------------------------------

    def open(self) -> None:
        """Lock the journal and replay it.

        Raises :class:`JournalLocked` if another process has it open, :class:`JournalCorrupt`
        if a record other than the last cannot be read, :class:`OSError` on I/O errors.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            raise JournalLocked(f"{self.path} is in use by another bridge") from None
        self._lock_fd = lock_fd
        try:
            self._replay()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Close the file and release the lock (what was written stays)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def __enter__(self) -> Journal:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _replay(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        good = 0
        lines = data.split(b"\n")
        for number, line in enumerate(lines):
            last = number == len(lines) - 1
            if not line:
                continue
            try:
                record = orjson.loads(line)
                self._apply(record)
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                if last:
                    break  # a torn tail: the write that was cut off never counted
                raise JournalCorrupt(f"{self.path}: record {number + 1} unreadable: {exc}") from exc
            if last:
                break  # complete JSON without its newline: still a torn write
            good += len(line) + 1
        if good < len(data):
            os.truncate(self.path, good)
        self._size = good

    def _apply(self, record: dict[str, Any]) -> None:
        op = record["op"]
        if op == "add":
            ids, frames = record["ids"], record["frames"]
            if len(ids) != len(frames):
                raise ValueError("ids and frames differ in length")
            for i, frame in zip(ids, frames, strict=True):
                self._pending[int(i)] = frame
                self._next_id = max(self._next_id, int(i) + 1)
            if "cursor" in record:
                self.cursor = record["cursor"]
        elif op == "ack":
            for lo, hi in record["ids"]:
                for i in range(int(lo), int(hi) + 1):
                    self._pending.pop(i, None)
            self._acked_records += 1
        elif op == "base":
            self._next_id = max(self._next_id, int(record["next_id"]))
            self.cursor = record.get("cursor")
        else:
            raise ValueError(f"unknown op {op!r}")

    # -- reading ----------------------------------------------------------------------

    def __len__(self) -> int:
        """How many frames are pending (added, not acked)."""
        return len(self._pending)

    @property
    def room(self) -> int:
        """How many more frames may be appended before the bound."""
        return max(0, self.max_pending - len(self._pending))

    def pending(self) -> list[tuple[int, dict[str, Any]]]:
        """Every pending (id, frame), oldest first."""
        return list(self._pending.items())

    def frame(self, frame_id: int) -> dict[str, Any] | None:
        """The pending frame with ``frame_id``, or ``None`` once acked."""
        return self._pending.get(frame_id)

    # -- writing ----------------------------------------------------------------------

    def append(self, frames: Sequence[dict[str, Any]], cursor: Any = None) -> list[int]:
        """Durably add ``frames`` (and the source ``cursor`` after them); return their ids.

        Raises :class:`JournalFull` past ``max_pending``, :class:`OSError` on I/O errors.
        """
        if len(frames) > self.room:
            raise JournalFull(f"{len(self._pending)} frames pending, at most {self.max_pending}")
        ids = list(range(self._next_id, self._next_id + len(frames)))
        record: dict[str, Any] = {"op": "add", "ids": ids, "frames": list(frames)}
        if cursor is not None:
            record["cursor"] = cursor
        self._write(record)
        self._next_id += len(frames)
        self._pending.update(zip(ids, frames, strict=True))
        if cursor is not None:
            self.cursor = cursor
        return ids

    def ack(self, ids: Iterable[int]) -> int:
        """Durably drop the frames ``ids`` (the server has them); return how many were pending.

        Compacts the file when that is worth it. Raises :class:`OSError` on I/O errors.
        """
        known = [i for i in ids if i in self._pending]
        if not known:
            return 0
        self._write({"op": "ack", "ids": _ranges(known)})
        for i in known:
            del self._pending[i]
        self._acked_records += 1
        if self._size >= self.compact_bytes and (
            not self._pending or self._acked_records >= self.compact_after
        ):
            self.compact()
        return len(known)

    def compact(self) -> None:
        """Rewrite the file with only the pending frames. Raises :class:`OSError`."""
        if self._fd is None:
            raise JournalError("journal is not open")
        out = [orjson.dumps({"op": "base", "next_id": self._next_id, "cursor": self.cursor})]
        items = self.pending()
        for start in range(0, len(items), _CHUNK):
            chunk = items[start : start + _CHUNK]
            record = {"op": "add", "ids": [i for i, _ in chunk], "frames": [f for _, f in chunk]}
            out.append(orjson.dumps(record))
        data = b"\n".join(out) + b"\n"
        write_atomically(self.path, data)
        self._size = len(data)
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._acked_records = 0
        self.compactions += 1

    def _write(self, record: dict[str, Any]) -> None:
        if self._fd is None:
            raise JournalError("journal is not open")
        data = orjson.dumps(record) + b"\n"
        written = os.write(self._fd, data)
        if written != len(data):  # a short write on a regular file means a full disk
            raise OSError(f"short write to {self.path}: {written} of {len(data)} bytes")
        os.fsync(self._fd)
        self._size += written
