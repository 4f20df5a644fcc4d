"""Run the app on uvicorn with the transport choices of the architecture.

uvloop, and :class:`server.push.transport.EdgeProtocol` as uvicorn's ``http`` protocol class
(request deadline and size limits, then uvicorn's httptools protocol for HTTP, or our own
WebSocket connection on ``websockets``' sans-I/O protocol for ``/v1/ws``); uvicorn's own
WebSocket support is off (``ws="none"``). No permessage-deflate (small messages, 5-10x memory
per connection, decompression bombs); 64 KiB message limit (1009 above it); keepalive pings
at the configured interval. On SIGINT/SIGTERM uvicorn stops accepting, closes every
WebSocket with 1012 (reconnect elsewhere), and then the lifespan writes pending frames and
closes the store.
"""

from __future__ import annotations

import gc
import logging
import signal
import sys
from types import FrameType

import uvicorn

from server.app import create_app
from server.push.transport import EdgeProtocol
from server.settings import Settings

GRACEFUL_SHUTDOWN_S = 10


def uvicorn_config(settings: Settings, **overrides: object) -> uvicorn.Config:
    """The uvicorn configuration for ``settings`` (``overrides`` win, for tests/benchmarks)."""
    options: dict[str, object] = {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop",
        "http": EdgeProtocol,
        "ws": "none",
        "lifespan": "on",
        "log_level": settings.log_level,
        "access_log": settings.log_level == "debug",
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_S,
        "server_header": False,
        "backlog": 4096,
    }
    options.update(overrides)
    return uvicorn.Config(create_app(settings), **options)  # type: ignore[arg-type]


def serve(settings: Settings) -> int:
    """Serve until interrupted; return the exit code."""
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = uvicorn_config(settings)
    server = uvicorn.Server(config)
    base = settings.base_url
    print(
        f"companion: serving on {base} (store={settings.store}, broker={settings.broker}, "
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
    # and collect less often.
    gc.freeze()
    gc.set_threshold(50_000, 20, 1000)
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


def _stopped(signum: int, frame: FrameType | None) -> None:
    """Runs when uvicorn re-raises the signal that stopped it: already handled."""
