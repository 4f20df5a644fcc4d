"""Run the app on uvicorn with the transport choices of the architecture.

uvloop, and :class:`server.push.transport.EdgeProtocol` as uvicorn's ``http`` protocol class
(request deadline and size limits, then uvicorn's httptools protocol for HTTP, or our own
WebSocket connection on ``websockets``' sans-I/O protocol for ``/v1/ws`` and ``/socket``);
uvicorn's own sans-I/O WebSocket protocol upgrades only the operator's fleet feed.
No permessage-deflate (small messages, 5-10x memory per connection, decompression
bombs); 64 KiB message limit (1009 above it); keepalive pings at the configured interval.
On SIGINT/SIGTERM uvicorn stops accepting, closes every WebSocket with 1012 (reconnect
elsewhere), and then the lifespan writes pending frames and closes the store.
"""

from __future__ import annotations

import gc
import logging
import os
import re
import signal
import socket
import sys
from importlib import metadata
from types import FrameType
from typing import Final

import uvicorn

from server.app import create_app
from server.broker.base import safe_url
from server.protocol import MAX_MESSAGE_BYTES
from server.push.transport import EdgeProtocol
from server.settings import Settings

GRACEFUL_SHUTDOWN_S = 10

TESTED_VERSIONS: Final = {
    "uvicorn": ("0.54", "0.55"),
    "starlette": ("1.10", "2"),
    "websockets": ("17.4", "18"),
    "httptools": ("0.9", "0.10"),
    "uvloop": ("0.23", "0.24"),
}
"""Each dependency whose behaviour the edge relies on: the versions it was tested with,
``[low, high)``. The same bounds are in ``pyproject.toml`` (a test keeps them equal);
:func:`serve` refuses to start with a version outside them."""

OUR_LOGGERS: Final = ("server", "brain")
"""The loggers ``COMPANION_LOG_LEVEL=debug`` opens to DEBUG; no others."""

_QUERY: Final = re.compile(r"\?[^\s\"]*")


class RedactQueries(logging.Filter):
    """Drops query strings from log lines: ``/v1/ws?token=…`` carries a bearer token, and
    a query may carry anything else a client chose. Installed on uvicorn's loggers.

    uvicorn's access formatter unpacks the record's five arguments (client, method, path,
    version, status): there the path argument loses its query; any other line whose text
    holds a query is replaced by its redacted rendering.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (args[0], args[1], args[2].split("?", 1)[0], args[3], args[4])
            return True
        message = record.getMessage()
        if "?" in message:
            record.msg, record.args = _QUERY.sub("", message), ()
        return True


def untested_dependencies() -> list[str]:
    """One line per installed dependency outside :data:`TESTED_VERSIONS` (or missing)."""
    problems: list[str] = []
    for name, (low, high) in TESTED_VERSIONS.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            problems.append(f"{name} is not installed (tested: >={low},<{high})")
            continue
        if not _release(low) <= _release(installed) < _release(high):
            problems.append(f"{name} {installed} is not a tested version (>={low},<{high})")
    return problems


def _release(version: str) -> tuple[int, ...]:
    """The numeric release of a version string (``"0.54.0rc1"`` → ``(0, 54, 0)``)."""
    numbers: list[int] = []
    for part in version.split("."):
        digits = re.match(r"\d+", part)
        if digits is None:
            break
        numbers.append(int(digits.group()))
        if len(digits.group()) != len(part):
            break
    return tuple(numbers)


def uvicorn_config(settings: Settings, **overrides: object) -> uvicorn.Config:
    """The uvicorn configuration for ``settings`` (``overrides`` win, for tests/benchmarks)."""
    options: dict[str, object] = {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop",
        "http": EdgeProtocol,
        # Device sockets never reach it (EdgeProtocol answers them); only the operator's
        # fleet feed (/ops/ws) is upgraded by uvicorn's sans-I/O WebSocket protocol.
        "ws": "websockets-sansio",
        "ws_per_message_deflate": False,
        "ws_max_size": MAX_MESSAGE_BYTES,
        "lifespan": "on",
        "log_level": settings.log_level,
        "access_log": settings.log_level == "debug",
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_S,
        "server_header": False,
        "backlog": 4096,
    }
    options.update(overrides)
    config = uvicorn.Config(create_app(settings), **options)  # type: ignore[arg-type]
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactQueries) for f in logger.filters):
            logger.addFilter(RedactQueries())
    return config


def serve(settings: Settings) -> int:
    """Serve until interrupted; return the exit code (2: an untested dependency)."""
    if problems := untested_dependencies():
        print(
            "companion: refusing to start with dependencies it was not tested with:\n  "
            + "\n  ".join(problems)
            + "\n  install the bounds of pyproject.toml: pip install -e .",
            file=sys.stderr,
        )
        return 2
    level = logging.getLevelName(settings.log_level.upper())
    # Libraries log request payloads at DEBUG (aiosqlite its SQL parameters: sensor values;
    # HTTP clients their bodies): they stay at INFO or above whatever the setting says.
    logging.basicConfig(
        level=max(level, logging.INFO), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for ours in OUR_LOGGERS:
        logging.getLogger(ours).setLevel(level)
    config = uvicorn_config(settings)
    server = uvicorn.Server(config)
    # Try the address before the banner and the app's start-up: a port in use is one clear
    # line and exit code 1, not "serving on … ready" followed by uvicorn's error. uvicorn
    # then binds it itself (handing it our socket would drop its "Uvicorn running on" line,
    # which operators and tests wait for); losing a race in between fails as uvicorn does.
    try:
        listen(settings.host, settings.port, backlog=config.backlog).close()
    except OSError as exc:
        print(
            f"companion serve: cannot listen on {settings.host}:{settings.port}: "
            f"{os.strerror(exc.errno) if exc.errno else exc} (another server running? "
            "choose another --port)",
            file=sys.stderr,
            flush=True,
        )
        return EXIT_CANNOT_LISTEN
    base = settings.base_url
    print(
        f"companion: serving on {base} (store={settings.store}, "
        f"broker={safe_url(settings.broker)}, "
        f"data={settings.data_dir})\n"
        f"  token:     companion token alice --device phone\n"
        f"  websocket: {base.replace('http', 'ws', 1)}/v1/ws  (Authorization: Bearer <token>)\n"
        f"  debug:     {base}/debug?token=$(companion token alice --device debug)",
        file=sys.stderr,
        flush=True,
    )
    # Every connection holds a few dozen objects; with the default thresholds, full
    # collections walk all of them several times a second under load and stall pushes
    # (benchmarks: p99 243 ms -> 54 ms at 2,000 subscribers). Freeze what start-up built
    # and make full collections rare (the third threshold). The first two bound the pauses
    # of the young collections: frames kept in analysis windows survive them, and a middle
    # collection walks every survivor since the last one (at 80,000 frames/s: 170-200 ms
    # with 50,000/20, 48-60 ms with 20,000/10; docs/benchmarks.md, "Ingest").
    gc.freeze()
    gc.set_threshold(20_000, 10, 1000)
    # uvicorn handles SIGINT/SIGTERM itself (graceful shutdown), then re-raises the signal
    # into the handler it found, which by default would kill the process with -15 after a
    # clean stop. This handler makes that re-raise a no-op, so a clean stop exits 0.
    previous = {sig: signal.signal(sig, _stopped) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if server.started else 1


EXIT_CANNOT_LISTEN = 1
"""Exit code of ``companion serve`` when its address is in use or not allowed."""


def listen(host: str, port: int, *, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket on ``host:port`` (IPv6 when ``host`` has a colon).

    Raises :class:`OSError` when the address is in use, not allowed or not local.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=backlog)


def _stopped(signum: int, frame: FrameType | None) -> None:
    """Runs when uvicorn re-raises the signal that stopped it: already handled."""
