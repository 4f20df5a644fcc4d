"""The baseline: the least a Python WebSocket broadcast server can do, on uvloop.

``websockets``' own asyncio server, permessage-deflate off, every connection in one set.
A message on ``/control`` (any text) makes it send one delta-shaped message, stamped with
the send time ``t`` (epoch ms) and a round number, to every other connection with
:func:`websockets.broadcast` (one encode, one frame write per socket, no per-connection
task or queue). ``GET /healthz`` answers 200. This is the practical limit the companion
server is measured against in ``bench/fanout.py``.

    python -m bench.raw_server --port 8801
"""

from __future__ import annotations

import argparse
import asyncio
import http
import time

import orjson
import uvloop
import websockets
from websockets.asyncio.server import Request, Response, ServerConnection, serve

subscribers: set[ServerConnection] = set()
rounds = 0


def health(connection: ServerConnection, request: Request) -> Response | None:
    if request.path == "/healthz":
        return connection.respond(http.HTTPStatus.OK, "ok\n")
    return None


async def handler(connection: ServerConnection) -> None:
    global rounds
    if connection.request is not None and connection.request.path == "/control":
        async for _ in connection:
            rounds += 1
            message = orjson.dumps(
                {
                    "op": "delta",
                    "user_id": "fan",
                    "version": rounds,
                    "base": rounds - 1,
                    "state_hash": "0123456789abcdef",
                    "changes": {"state": "stressed", "mood": "anxious"},
                    "t": time.time() * 1000,
                }
            ).decode()
            websockets.broadcast(subscribers, message)
        return
    subscribers.add(connection)
    try:
        await connection.wait_closed()
    finally:
        subscribers.discard(connection)


async def main(port: int) -> None:
    async with serve(
        handler,
        "127.0.0.1",
        port,
        compression=None,
        process_request=health,
        ping_interval=45,
        ping_timeout=20,
        max_size=64 * 1024,
        backlog=4096,
    ) as server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main(parser.parse_args().port))
