"""REST requests share the node's cache of verified tokens with the WebSocket handshakes: a
client's next request is not decoded again, and the cache never outlives a token's expiry
nor vouches for a token it did not verify."""

from __future__ import annotations

import time

from server.settings import Settings
from tests.conftest import start_server, token

T0 = float(int(time.time()))


async def test_a_rest_token_is_verified_once_and_refused_once_expired(settings: Settings) -> None:
    now = [T0]
    async with start_server(settings, clock=lambda: now[0]) as live:
        bearer = {"Authorization": f"Bearer {token('alice', ttl=60, now=T0)}"}
        async with live.http() as http:
            first = await http.get("/v1/users/alice/state", headers=bearer)
            second = await http.get("/v1/users/alice/state", headers=bearer)
            cached = len(live.services.tokens)
            now[0] = T0 + 60 + 60  # past the expiry and its leeway
            late = await http.get("/v1/users/alice/state", headers=bearer)

    assert (first.status_code, second.status_code) == (200, 200)
    assert cached == 1  # one entry for two requests with one token
    assert late.status_code == 401
    assert "expired" in late.json()["detail"]


async def test_a_tampered_token_is_refused_though_its_original_is_cached(
    settings: Settings,
) -> None:
    async with start_server(settings) as live:
        good = token("alice")
        header, payload, signature = good.split(".")
        forged = f"{header}.{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
        async with live.http() as http:
            ok = await http.get(
                "/v1/users/alice/state", headers={"Authorization": f"Bearer {good}"}
            )
            bad = await http.get(
                "/v1/users/alice/state", headers={"Authorization": f"Bearer {forged}"}
            )

    assert ok.status_code == 200
    assert bad.status_code == 401
