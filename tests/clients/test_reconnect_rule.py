"""The one reconnect rule of the clients: the protocol's table, failover between nodes, and
the debug page's JavaScript copy of both (which must not drift from them)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from brain.backoff import Backoff
from clients.connect.access import Endpoints, endpoints, servers
from clients.connect.failover import RECONNECT, Failover
from server.protocol import (
    Disconnects,
    Reconnect,
    describe_close,
    reconnect_after,
    reconnect_after_refusal,
)

DEBUG_JS = Path(__file__).parents[2] / "clients" / "debug" / "debug.js"
A, B, C = (endpoints(f"http://127.0.0.1:{port}") for port in (8001, 8002, 8003))

RULE_TABLE = [
    (None, Reconnect.BACKOFF),  # lost without a close frame
    (1000, Reconnect.BACKOFF),
    (1001, Reconnect.SOON),  # going away
    (1006, Reconnect.BACKOFF),
    (1007, Reconnect.BACKOFF),
    (1008, Reconnect.BACKOFF),
    (1009, Reconnect.BACKOFF),
    (1011, Reconnect.BACKOFF),
    (1012, Reconnect.SOON),  # server restart: come back soon, elsewhere
    (1013, Reconnect.SOON),  # try again later
    (4001, Reconnect.STOP),  # token expired
    (4003, Reconnect.STOP),  # forbidden
    (4999, Reconnect.BACKOFF),  # a code this client does not know: try again, politely
]


@pytest.mark.parametrize(("code", "rule"), RULE_TABLE)
def test_each_close_code_maps_to_its_reconnect_rule(code: int | None, rule: Reconnect) -> None:
    assert reconnect_after(code) is rule


@pytest.mark.parametrize(
    ("status", "rule"),
    [(401, Reconnect.STOP), (403, Reconnect.STOP), (429, Reconnect.SOON),
     (503, Reconnect.SOON), (500, Reconnect.BACKOFF), (404, Reconnect.BACKOFF)],
)  # fmt: skip
def test_each_refused_handshake_maps_to_its_reconnect_rule(status: int, rule: Reconnect) -> None:
    assert reconnect_after_refusal(status) is rule


def test_every_named_disconnect_carries_the_rule_clients_apply() -> None:
    for disconnect in Disconnects.all():
        assert reconnect_after(disconnect.code) is disconnect.reconnect, disconnect
    assert describe_close(1012) == "1012 (server restart)"
    assert describe_close(None) == "connection lost"


def fixed(draw: float) -> Backoff:
    return Backoff(attempts=None, base=0.5, cap=5.0, soon=1.0, random=lambda: draw)


def test_a_lost_node_is_left_for_the_next_one_after_a_short_pause() -> None:
    failover = Failover([A, B, C], backoff=fixed(0.5))
    retry = failover.failed(Reconnect.BACKOFF)
    assert retry is not None
    assert (retry.server, retry.pause) == (B, 0.25)  # half of base: short, jittered


def test_come_back_soon_means_the_soon_pause_then_the_next_node() -> None:
    failover = Failover([A, B], backoff=fixed(0.5), start=1)
    retry = failover.failed(Reconnect.SOON)
    assert retry is not None
    assert (retry.server, retry.pause) == (A, 0.5)  # half of the 1 s soon window


def test_backoff_grows_only_once_every_node_failed_and_stops_at_the_cap() -> None:
    failover = Failover([A, B, C], backoff=fixed(0.999))
    pauses, order = [], []
    for _ in range(18):
        retry = failover.failed(Reconnect.BACKOFF)
        assert retry is not None
        pauses.append(round(retry.pause / 0.999, 6))
        order.append(retry.server)
    assert pauses == [0.5] * 3 + [1.0] * 3 + [2.0] * 3 + [4.0] * 3 + [5.0] * 6
    assert order[:4] == [B, C, A, B]


def test_an_answer_resets_the_backoff_but_keeps_the_node() -> None:
    failover = Failover([A, B], backoff=fixed(0.999))
    for _ in range(6):
        failover.failed(Reconnect.BACKOFF)
    assert failover.current == A and failover.failures == 6
    failover.succeeded()
    retry = failover.failed(Reconnect.BACKOFF)
    assert retry is not None
    assert (retry.server, round(retry.pause, 4)) == (B, round(0.5 * 0.999, 4))


def test_a_refused_token_stops_whatever_the_list() -> None:
    failover = Failover([A, B])
    assert failover.failed(Reconnect.STOP) is None
    assert failover.current == A  # no node was given up on


def test_one_url_behind_a_load_balancer_is_the_one_node_case() -> None:
    failover = Failover([A], backoff=fixed(0.999))
    soon = failover.failed(Reconnect.SOON)
    lost = failover.failed(Reconnect.BACKOFF)
    assert soon is not None and lost is not None
    assert (soon.server, lost.server) == (A, A)
    assert soon.pause == pytest.approx(0.999) and lost.pause == pytest.approx(0.999)


def test_a_crowd_given_the_same_list_spreads_over_the_nodes() -> None:
    starts = [Failover([A, B, C], start=n).current for n in range(6)]
    assert starts == [A, B, C, A, B, C]
    with pytest.raises(ValueError):
        Failover([])


def test_server_urls_may_be_repeated_or_comma_separated() -> None:
    found = servers(["http://127.0.0.1:8001, ws://127.0.0.1:8002/v1/ws", "127.0.0.1:8001"])
    assert found == (A, B)
    assert servers("http://127.0.0.1:8003") == (C,)
    with pytest.raises(ValueError):
        servers([" , "])
    with pytest.raises(ValueError):
        servers("ftp://127.0.0.1")
    assert isinstance(found[0], Endpoints)


def _js_constant(name: str, text: str) -> str:
    match = re.search(rf"const {name} = (.+?);", text, re.S)
    assert match is not None, f"debug.js defines no {name}"
    return match[1]


def test_the_debug_page_applies_the_same_rule_and_backoff() -> None:
    text = DEBUG_JS.read_text()
    stop = {int(code) for code in re.findall(r"(\d+):", _js_constant("STOP_CODES", text))}
    soon = {int(code) for code in re.findall(r"\d+", _js_constant("SOON_CODES", text))}
    known = [code for code, _ in RULE_TABLE if code is not None]
    assert stop == {code for code in known if reconnect_after(code) is Reconnect.STOP}
    assert soon == {code for code in known if reconnect_after(code) is Reconnect.SOON}
    assert int(_js_constant("BACKOFF_BASE_MS", text)) == RECONNECT.base * 1000
    assert int(_js_constant("BACKOFF_CAP_MS", text)) == RECONNECT.cap * 1000
    assert int(_js_constant("SOON_MS", text)) == RECONNECT.soon * 1000
