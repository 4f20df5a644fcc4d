"""``/ops`` and ``/ops/ws`` on a live server: the operator token, the feed, its numbers.

One node on the memory broker (the membership is this node alone). The feed's figures are
checked against the same server's ``/metrics``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection

from server.auth import LEEWAY_S
from server.errors import StoreError, VersionConflict
from server.metrics import Metrics
from server.ops.stage import OPS
from server.ops.store_errors import OPERATIONS, count_store_errors
from server.settings import Settings
from server.store.base import UserState
from server.store.sqlite import SQLiteStore
from tests.conftest import LiveServer, auth, start_server, token


def feed_url(live: LiveServer, tok: str) -> str:
    return live.ws_url.replace("/v1/ws", "/ops/ws") + f"?token={tok}"


async def view_where(
    ws: ClientConnection, condition: Callable[[dict[str, Any]], bool], within: float = 10.0
) -> dict[str, Any]:
    """The first view from the feed that satisfies ``condition`` (fails after ``within`` s)."""
    async with asyncio.timeout(within):
        while True:
            view: dict[str, Any] = orjson.loads(await ws.recv())
            if condition(view):
                return view


Scrape = Callable[..., float]


async def scrape(live: LiveServer) -> Scrape:
    """``/metrics`` of ``live`` now, as ``value(name, **labels)``."""
    async with live.http() as http:
        text = (await http.get("/metrics")).text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    return lambda name, **labels: samples[(name, tuple(sorted(labels.items())))]


async def test_the_feed_shows_this_node_and_numbers_that_agree_with_metrics(
    live_server: LiveServer,
) -> None:
    phone = await live_server.connect("alice", "phone")
    watch = await live_server.connect("alice", "watch")
    async with websockets.connect(feed_url(live_server, token("oncall", "operator"))) as feed:
        view = await view_where(feed, lambda v: v["connections"].get("watch") == 1)
        metrics = await scrape(live_server)
        for kind in ("phone", "watch"):
            assert view["connections"][kind] == metrics("companion_connections", device=kind)
        [me] = view["nodes"]
        assert me["id"] == view["self"] and me["up"] and me["connections_total"] == 2
        assert me["rss_bytes"] > 10 * 2**20 and me["store_ok"] and me["broker"] == "memory"
        assert view["membership_ok"] is True and (view["nodes_up"], view["nodes_down"]) == (1, 0)

        change = {"state": "stressed", "mood": "anxious", "energy": 30}
        async with live_server.http() as http:
            answer = await http.post(
                "/v1/demo/users/alice/state", json=change, headers=auth("svc", "service")
            )
        assert answer.status_code == 200
        view = await view_where(feed, lambda v: v["totals"]["deltas_published"] >= 1)
        metrics = await scrape(live_server)
        assert view["totals"]["deltas_published"] == metrics("companion_deltas_published_total")
        assert view["totals"]["deltas_pushed"] == metrics("companion_deltas_pushed_total")
        assert view["push_ms"]["count"] >= 1 and view["push_ms"]["p99"] is not None
        assert view["rates"]["deltas_per_s"] > 0
        async with live_server.http() as http:
            text = (await http.get("/metrics")).text
        behind = sum(
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "companion_devices_behind"
        )
        assert view["gauges"]["devices_behind"] == behind  # every kind, as the page shows it
    await phone.close()
    await watch.close()


async def test_the_page_sends_its_token_as_a_subprotocol_so_no_url_carries_it(
    live_server: LiveServer,
) -> None:
    url = live_server.ws_url.replace("/v1/ws", "/ops/ws")
    protocols = ["companion.ops", f"bearer.{token('oncall', 'operator')}"]
    async with websockets.connect(url, subprotocols=protocols) as feed:  # type: ignore[arg-type]
        assert feed.subprotocol == "companion.ops"
        assert (await view_where(feed, lambda v: bool(v["nodes"])))["nodes"][0]["up"]
    with pytest.raises(websockets.InvalidStatus) as refused:
        wrong = ["companion.ops", f"bearer.{token('alice', 'phone')}"]
        async with websockets.connect(url, subprotocols=wrong):  # type: ignore[arg-type]
            pass
    assert refused.value.response.status_code == 403


@pytest.mark.parametrize("device", ["phone", "watch", "debug", "service"])
async def test_only_an_operator_token_opens_the_feed(live_server: LiveServer, device: str) -> None:
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(feed_url(live_server, token("alice", device))):
            pass
    assert refused.value.response.status_code == 403


async def test_the_feed_refuses_no_token_a_bad_one_and_a_foreign_origin(
    live_server: LiveServer,
) -> None:
    for url, headers, status in (
        (live_server.ws_url.replace("/v1/ws", "/ops/ws"), {}, 401),
        (feed_url(live_server, "not-a-token"), {}, 401),
        (feed_url(live_server, token("oncall", "operator")), {"Origin": "https://evil.test"}, 403),
    ):
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(url, additional_headers=headers):
                pass
        assert refused.value.response.status_code == status


async def test_refused_handshakes_are_not_counted_as_errors(live_server: LiveServer) -> None:
    ops = live_server.services.parts[OPS]
    for _ in range(3):
        with pytest.raises(websockets.InvalidStatus):
            async with websockets.connect(feed_url(live_server, "bad-token")):
                pass
    view = await ops.next_view(0, 5.0)
    assert view[1]["totals"]["errors_logged"] == 0
    assert ops.errors.recent() == []


async def test_an_operator_token_reads_and_writes_no_users_data(live_server: LiveServer) -> None:
    operator = {"Authorization": f"Bearer {token('alice', 'operator')}"}
    async with live_server.http() as http:
        assert (await http.get("/v1/users/alice/state", headers=operator)).status_code == 403
        assert (await http.get("/v1/users/alice/export", headers=operator)).status_code == 403
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(live_server.ws_url, additional_headers=operator):
            pass
    assert refused.value.response.status_code == 403


async def test_the_feed_closes_when_the_token_expires(settings: Settings) -> None:
    now = [time.time()]
    async with start_server(settings, clock=lambda: now[0], stages=[]) as live:
        tok = token("oncall", "operator", ttl=60, now=now[0])
        async with websockets.connect(feed_url(live, tok)) as feed:
            await view_where(feed, lambda v: bool(v["nodes"]))
            now[0] += 60 + LEEWAY_S + 1
            with pytest.raises(websockets.ConnectionClosed):
                await view_where(feed, lambda v: False)
            assert feed.close_code == 4001


async def test_page_files_are_served_with_types_and_no_cache(live_server: LiveServer) -> None:
    async with live_server.http() as http:
        expected = {
            "/ops": "text/html; charset=utf-8",
            "/ops/static/ops.js": "text/javascript; charset=utf-8",
            "/ops/static/ops.css": "text/css; charset=utf-8",
            "/ops/static/fleet.svg": "image/svg+xml",
        }
        for path, content_type in expected.items():
            response = await http.get(path)
            assert response.status_code == 200, path
            assert response.headers["content-type"] == content_type
            assert response.headers["cache-control"] == "no-cache"
            assert response.headers["referrer-policy"] == "no-referrer"
            again = await http.get(path, headers={"If-None-Match": response.headers["etag"]})
            assert again.status_code == 304
        assert "script-src 'self'" in (await http.get("/ops")).headers["content-security-policy"]
        for bad in ("/ops/static/..%2Fops.py", "/ops/static/page.py", "/ops/static/x.js"):
            assert (await http.get(bad)).status_code == 404, bad


async def test_store_errors_are_counted_by_operation_and_a_lost_race_is_not(
    settings: Settings,
) -> None:
    settings.data_dir.mkdir(parents=True)
    store = SQLiteStore(settings.sqlite_path)
    await store.open()
    metrics = Metrics()
    count_store_errors(store, metrics)
    count_store_errors(store, metrics)  # idempotent: counted once, not twice
    await store.put_state(UserState.initial("alice"), 0)
    with pytest.raises(VersionConflict):
        await store.put_state(UserState.initial("alice"), 0)
    await store.close()
    with pytest.raises(StoreError):
        await store.get_state("alice")
    samples = {
        (s.name, tuple(s.labels.values())): s.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
    }
    assert samples[("companion_store_errors_total", ("get_state",))] == 1.0
    assert samples[("companion_store_errors_total", ("put_state",))] == 0.0
    # Every call is timed, the failed one and the lost race too; the labels are the fixed set.
    assert samples[("companion_store_seconds_count", ("put_state",))] == 2.0
    assert samples[("companion_store_seconds_count", ("get_state",))] == 1.0
    timed = {
        labels[0] for name, labels in samples if name == "companion_store_seconds_count" and labels
    }
    assert timed == set(OPERATIONS)
