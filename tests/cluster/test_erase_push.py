"""An erase through one node reaches the user's devices on another as the blank state.

``DELETE /v1/users/{id}`` leaves a blank state one version on from the erased one, and
publishes it like any commit (docs/protocol.md, "Erase"): a phone on another node gets a
``delta`` to that version carrying every visible field of the blank state, and a device
that comes back later with the erased version gets the blank snapshot, never ``uptodate``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from server.store.base import UserState
from tests.cluster.conftest import ClusterOn
from tests.conftest import auth

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.dynamodb]


async def next_message(ws: ClientConnection, op: str, within: float = 10.0) -> dict[str, Any]:
    """The next message of kind ``op`` (others skipped); TimeoutError after ``within`` s."""
    async with asyncio.timeout(within):
        while True:
            message: dict[str, Any] = orjson.loads(await ws.recv())
            if message["op"] == op:
                return message


async def hello(ws: ClientConnection, since: int | None = None) -> None:
    body: dict[str, Any] = {"op": "hello", "client": "erase-test"}
    if since is not None:
        body["since"] = since
    await ws.send(orjson.dumps(body).decode())


async def test_an_erase_on_one_node_pushes_the_blank_state_to_devices_on_another(
    cluster_on: ClusterOn, redis_server: str, dynamodb_local: str
) -> None:
    user = "erased-phone-user"
    blank = UserState.initial(user)
    async with cluster_on(broker=redis_server, dynamodb=dynamodb_local, nodes=2) as cluster:
        a, b = cluster.nodes
        async with websockets.connect(b.ws_url, additional_headers=auth(user, "phone")) as phone:
            await hello(phone)
            await next_message(phone, "snapshot")
            async with a.http() as http:
                committed = await http.post(
                    f"/v1/demo/users/{user}/state",
                    json={"state": "exercising", "mood": "energized", "energy": 90},
                    headers=auth(user, "service"),
                )
                assert committed.status_code == 200, committed.text
                before = [await next_message(phone, "delta")]
                erasing = time.time() * 1000
                erased = await http.delete(f"/v1/users/{user}", headers=auth(user))
                assert erased.status_code == 200, erased.text
            # The avatar saga of the commit may have pushed a version before the erase.
            while (delta := await next_message(phone, "delta"))["state_hash"] != blank.state_hash:
                before.append(delta)
            last = max(d["version"] for d in before)

        async with websockets.connect(a.ws_url, additional_headers=auth(user, "phone")) as late:
            await hello(late, since=last)
            snapshot = await next_message(late, "snapshot")
        on_b = await b.state(user)

    assert (delta["version"], delta["base"]) == (last + 1, last)
    assert delta["changes"] == orjson.loads(orjson.dumps(blank.visible()))
    assert erasing - 1000 <= delta["t"] <= erasing + 60_000  # the erase's time, in ms
    assert (snapshot["version"], snapshot["state_hash"]) == (last + 1, blank.state_hash)
    assert erasing - 1000 <= snapshot["updated_at"] <= erasing + 60_000  # not 0: the erase's
    assert (on_b["version"], on_b["state_hash"]) == (last + 1, blank.state_hash)
