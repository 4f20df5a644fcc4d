"""The python-socketio comparison: an ASGI Socket.IO server on uvicorn, like ours.

Same transport options as ``companion serve`` (uvloop, httptools, websockets-sansio,
permessage-deflate off). Each client joins the default namespace; a ``trigger`` event from
any client makes the server ``emit`` one ``delta`` event, stamped with the send time ``t``
(epoch ms) and a round number, to every connected client (Socket.IO's broadcast).
``GET /healthz`` answers 200.

    python -m bench.socketio_server --port 8802
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import socketio
import uvicorn

sio = socketio.AsyncServer(
    async_mode="asgi", cors_allowed_origins=[], logger=False, engineio_logger=False
)
rounds = 0


@sio.on("trigger")  # type: ignore[untyped-decorator,misc]
async def trigger(sid: str, data: Any = None) -> None:
    global rounds
    rounds += 1
    await sio.emit(
        "delta",
        {
            "op": "delta",
            "user_id": "fan",
            "version": rounds,
            "base": rounds - 1,
            "state_hash": "0123456789abcdef",
            "changes": {"state": "stressed", "mood": "anxious"},
            "t": time.time() * 1000,
        },
        skip_sid=sid,
    )


async def health(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok\n"})


app = socketio.ASGIApp(sio, other_asgi_app=health)

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=parser.parse_args().port,
        loop="uvloop",
        http="httptools",
        ws="websockets-sansio",
        ws_per_message_deflate=False,
        log_level="warning",
        access_log=False,
        backlog=4096,
    )
