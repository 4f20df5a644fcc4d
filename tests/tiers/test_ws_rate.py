"""The WebSocket rate limit of each user's tier: a free (default tier) user is closed at
the node's rate (``COMPANION_RATE_PER_S`` / ``_BURST``), a premium user sends up to the
premium rate on the same node; the tier is learned at ``hello``."""

from __future__ import annotations

from pathlib import Path

from websockets.asyncio.client import ClientConnection

from brain.model import Profile
from brain.tiers import parse_tiers
from server.auth import DeviceKind, Principal
from server.push.session import Session, SessionLimits
from server.ratelimit import TokenBucket
from server.settings import Settings
from server.tiers import TierBook
from tests.conftest import SECRET, auth, recv, send, start_server
from tests.server.conftest import close_code

# Refill is negligible (one message in 100 s): a connection may send its burst, no more.
TIERS = parse_tiers('{"premium": {"ws_rate_per_s": 0.01, "ws_rate_burst": 8}}')


def tight(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, secret=SECRET, tiers=TIERS, rate_per_s=0.01, rate_burst=4)


async def pings_answered(ws: ClientConnection, count: int) -> int:
    """Send ``count`` pings one by one; how many were answered with a pong before the
    server said ``rate_limited`` and closed with 1008 (or ``count``: all of them)."""
    for i in range(count):
        await send(ws, {"op": "ping", "t": i})
        reply = await recv(ws)
        if reply["op"] != "pong":
            assert (reply["op"], reply["code"]) == ("error", "rate_limited")
            assert await close_code(ws) == 1008
            return i
    return count


async def test_a_free_user_is_limited_at_the_free_rate_and_a_premium_one_is_not(
    tmp_path: Path,
) -> None:
    async with start_server(tight(tmp_path)) as live, live.http() as http:
        answer = await http.put(
            "/v1/users/bob/tier", json={"tier": "premium"}, headers=auth("bob", "service")
        )
        assert answer.status_code == 200, answer.text
        free = await live.connect("alice")  # hello: one message of its four
        premium = await live.connect("bob")  # hello: one of its eight
        try:
            assert await pings_answered(free, 7) == 3
            assert await pings_answered(premium, 7) == 7
        finally:
            await free.close()
            await premium.close()
        registry = live.services.metrics.registry
        closed = registry.get_sample_value("companion_closes_total", {"reason": "rate limit"})
        limited = {
            tier: registry.get_sample_value(
                "companion_tier_limits_total", {"tier": tier, "limit": "ws_rate"}
            )
            for tier in ("free", "premium")
        }
    assert closed == 1
    assert limited == {"free": 1, "premium": None}


async def test_a_node_that_has_not_seen_the_user_learns_the_tier_at_hello(
    tmp_path: Path,
) -> None:
    """Another node (a restart: an empty tier book) starts the premium user's socket at the
    default rate; the state read of ``hello`` raises it to the premium rate."""
    async with start_server(tight(tmp_path)) as first, first.http() as http:
        await http.put(
            "/v1/users/bob/tier", json={"tier": "premium"}, headers=auth("bob", "service")
        )
    async with start_server(tight(tmp_path)) as second:
        premium = await second.connect("bob")
        try:
            assert await pings_answered(premium, 8) == 7
        finally:
            await premium.close()


def test_the_default_tier_and_service_tokens_get_the_nodes_rate_other_tiers_theirs() -> None:
    book = TierBook(TIERS)
    book.learn("bob", Profile(tier="premium"))
    node = SessionLimits(0.01, 4, 3_600_000, tiers=book)
    lifted = SessionLimits(1000.0, 1000, 3_600_000, tiers=book)
    service = Principal("bob", DeviceKind.SERVICE, "t", 2**40)
    free = Principal("alice", DeviceKind.PHONE, "t", 2**40)
    premium = Principal("bob", DeviceKind.WATCH, "t", 2**40)
    assert node.rate_of(service) == node.rate_of(free) == (0.01, 4)
    assert node.rate_of(premium) == (0.01, 8)
    assert lifted.rate_of(free) == lifted.rate_of(premium) == (1000.0, 1000)  # never below


def test_a_session_retunes_when_the_tier_becomes_known() -> None:
    book = TierBook(TIERS)
    limits = SessionLimits(0.01, 4, 3_600_000, tiers=book)
    session = Session(Principal("bob", DeviceKind.PHONE, "t", 2**40), limits, now=0.0)
    closes = [session.on_frame(data=True, first=True, fin=True, now=0.0) for _ in range(3)]
    assert closes == [None] * 3  # three of the default (free) four
    book.learn("bob", Profile(tier="premium"))
    session.check_rate(0.0)
    allowed = [session.on_frame(data=True, first=True, fin=True, now=0.0) for _ in range(6)]
    assert allowed[:5] == [None] * 5  # the one left and the premium burst's four more
    assert allowed[5] is not None


def test_retune_adds_a_larger_bursts_difference_and_caps_a_smaller_one() -> None:
    bucket = TokenBucket(1.0, 4, now=0.0)
    assert all(bucket.take(0.0) for _ in range(3))
    bucket.retune(1.0, 8)
    assert [bucket.take(0.0) for _ in range(6)] == [True] * 5 + [False]
    full = TokenBucket(1.0, 8, now=0.0)
    full.retune(1.0, 2)
    assert [full.take(0.0) for _ in range(3)] == [True, True, False]
