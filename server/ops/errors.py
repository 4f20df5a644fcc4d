"""The last errors of this node, by kind: a bounded ring fed by the logging system.

:class:`ErrorRing` is a :class:`logging.Handler` for warnings and errors. It keeps *what
kind* of thing went wrong — the level, the part of the server that logged it, the exception
class — and never the message: log messages may carry a user id, and the fleet page and the
metric labels must never show a client's string. The part of the server is cut to a fixed
set (``server.push``, ``brain.analyst``, ``uvicorn``, ``other`` …), so the
``companion_errors_logged`` label set stays bounded.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from server.metrics import Metrics

RING_SIZE = 50
"""Errors kept per node: enough for "what has been going wrong", small in every heartbeat."""

_OUR_PACKAGES = frozenset({"server", "brain"})
_NOT_ERRORS = frozenset({"ASGI callable returned without completing handshake."})
"""Log formats that are not errors: uvicorn's websockets-sansio logs this at ERROR after
every refused handshake (a denial response), i.e. for every bad token a client sends
(Kludex/uvicorn#3138, open). Counting it would let anyone page the on-call engineer."""


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    """One logged warning or error: when, how bad, where, and the exception class if any."""

    t_ms: int
    level: str
    source: str
    exception: str

    def to_json(self) -> list[object]:
        return [self.t_ms, self.level, self.source, self.exception]

    @classmethod
    def from_json(cls, raw: object) -> ErrorEvent:
        """Raises :class:`ValueError` for anything but ``[int, str, str, str]``."""
        if not (isinstance(raw, list) and len(raw) == 4 and isinstance(raw[0], int)):
            raise ValueError("an error event is [t_ms, level, source, exception]")
        return cls(raw[0], str(raw[1]), str(raw[2]), str(raw[3]))


def source_of(logger_name: str) -> str:
    """The part of the system a logger belongs to, from a fixed set of names."""
    parts = logger_name.split(".")
    if parts[0] in _OUR_PACKAGES:
        return ".".join(parts[:2])
    if parts[0] in ("uvicorn", "redis", "aiobotocore", "botocore", "anthropic", "google_genai"):
        return parts[0]
    return "other"


class ErrorRing(logging.Handler):
    """Counts warnings and errors and keeps the newest :data:`RING_SIZE` of them."""

    def __init__(self, metrics: Metrics, clock: Callable[[], float] = time.time) -> None:
        super().__init__(level=logging.WARNING)
        self._metrics = metrics
        self._clock = clock
        self._ring: deque[ErrorEvent] = deque(maxlen=RING_SIZE)

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg in _NOT_ERRORS:
            return
        level = record.levelname.lower()
        if level not in ("warning", "error", "critical"):
            level = "error"
        source = source_of(record.name)
        exc_type = record.exc_info[0] if record.exc_info else None
        exception = exc_type.__name__ if exc_type is not None else ""
        self._metrics.errors_logged.labels(level, source).inc()
        self._ring.append(ErrorEvent(int(self._clock() * 1000), level, source, exception))

    def recent(self) -> list[ErrorEvent]:
        """The kept events, oldest first."""
        return list(self._ring)
