"""The current state from memory (:class:`~server.store.current.CurrentStates` in the state
service), on each store adapter: a warm commit reads nothing, and two nodes on one store
never lose or duplicate a version however stale their kept states are.

The "nodes" are two :class:`~server.state.StateService`s, each on its own store client
(its own SQLite connection pair on one file, or its own DynamoDB client on the same
DynamoDB Local tables) and its own memory broker, so neither hears the other's deltas:
the worst case for a kept state, which only the conditional writes make safe.
"""

from __future__ import annotations

import asyncio
import pathlib
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from typing import Any

import pytest

from brain.backoff import Backoff, instant
from server.broker.memory import MemoryBroker
from server.errors import VersionConflict
from server.metrics import Metrics
from server.push.hub import Hub
from server.state import StateService
from server.store import schema
from server.store.base import Store, UserState
from server.store.current import CurrentStates
from server.store.dynamodb import DynamoDBStore
from server.store.sqlite import SQLiteStore


class CountingStore:
    """A real store (any adapter) that counts the state reads and writes made through it."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.reads: Counter[str] = Counter()
        self.writes: list[UserState] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def get_state(self, user_id: str) -> UserState | None:
        self.reads["get_state"] += 1
        return await self.inner.get_state(user_id)

    async def tombstone(self, user_id: str) -> Any:
        self.reads["tombstone"] += 1
        return await self.inner.tombstone(user_id)

    async def put_state(
        self, state: UserState, expected_version: int, *, expected_profile: Any = None
    ) -> None:
        await self.inner.put_state(state, expected_version, expected_profile=expected_profile)
        self.writes.append(state)


@dataclass
class Node:
    state: StateService
    store: CountingStore
    metrics: Metrics


StoreOpener = Callable[[], Store]


@pytest.fixture(params=["sqlite", pytest.param("dynamodb", marks=pytest.mark.dynamodb)])
async def opener(
    request: pytest.FixtureRequest, tmp_path: pathlib.Path
) -> AsyncIterator[StoreOpener]:
    """Makes store clients of one store (a SQLite file, or DynamoDB Local tables)."""
    if request.param == "sqlite":
        path = tmp_path / "shared.sqlite3"
        yield lambda: SQLiteStore(path)
        return
    endpoint: str = request.getfixturevalue("dynamodb_local")
    prefix = f"t{uuid.uuid4().hex[:12]}-"

    def dynamodb() -> Store:
        return DynamoDBStore(
            table_prefix=prefix,
            region="us-east-1",
            endpoint_url=endpoint,
            retry=instant(Backoff()),
        )

    admin = dynamodb()
    assert isinstance(admin, DynamoDBStore)
    await admin.open()
    await admin.create_tables()
    try:
        yield dynamodb
    finally:
        await schema.delete_tables(admin.client, prefix)
        await admin.close()


@pytest.fixture
async def nodes(opener: StoreOpener) -> AsyncIterator[Callable[..., Any]]:
    """Starts nodes on the one store: ``await nodes(exclusive=...)``; stops them after."""
    async with AsyncExitStack() as stack:

        async def start(*, exclusive: bool = False) -> Node:
            inner = opener()
            await inner.open()
            stack.push_async_callback(inner.close)
            metrics = Metrics()
            hub = Hub(MemoryBroker(), metrics)
            await hub.start()
            stack.push_async_callback(hub.close)
            store = CountingStore(inner)
            return Node(
                StateService(store, hub, metrics, time.time, exclusive=exclusive), store, metrics
            )  # type: ignore[arg-type]

        yield start


def setting(**changes: Any) -> Callable[[UserState], Mapping[str, Any] | None]:
    """A ``decide`` that commits ``changes`` unless the state has them already."""

    def decide(current: UserState) -> Mapping[str, Any] | None:
        visible = current.visible()
        return None if all(visible[k] == v for k, v in changes.items()) else changes

    return decide


def conflicts(node: Node) -> float:
    return node.metrics.commit_conflicts._value.get()


async def test_a_commit_on_a_warm_cache_reads_nothing_from_the_store(nodes: Any) -> None:
    node: Node = await nodes(exclusive=True)
    await node.state.update("alice", setting(mood="happy"), cause="demo")  # cold: reads
    reads = sum(node.store.reads.values())

    for mood in ("tired", "happy", "tired"):
        await node.state.update("alice", setting(mood=mood), cause="demo")
    current = await node.state.current("alice")

    assert sum(node.store.reads.values()) == reads  # not one read after the first
    assert [w.version for w in node.store.writes] == [1, 2, 3, 4]
    assert current.version == 4 and current.mood == "tired"
    assert await node.store.inner.get_state("alice") == current
    assert node.metrics.state_reads.labels("cache")._value.get() == 4


async def test_a_kept_state_behind_another_nodes_commit_refreshes_and_loses_nothing(
    nodes: Any,
) -> None:
    a: Node = await nodes()
    b: Node = await nodes()
    await a.state.update("alice", setting(mood="happy"), cause="demo")  # v1, kept by a
    await b.state.update("alice", setting(state="stressed"), cause="demo")  # v2, a not told

    committed = await a.state.update("alice", setting(reasoning="from a"), cause="demo")

    assert committed is not None and committed.version == 3
    assert conflicts(a) == 1  # its write on the kept v1 lost its race, then it re-read
    stored = await a.store.inner.get_state("alice")
    assert stored is not None and stored.version == 3
    assert (stored.mood, stored.state, stored.reasoning) == ("happy", "stressed", "from a")


async def test_two_nodes_committing_at_once_never_lose_or_duplicate_a_version(
    nodes: Any,
) -> None:
    a: Node = await nodes()
    b: Node = await nodes()
    await a.state.update("alice", setting(mood="happy"), cause="demo")
    committed: list[int] = []
    lost = 0

    async def commits(node: Node, name: str) -> None:
        nonlocal lost
        for i in range(12):
            try:
                done = await node.state.update(
                    "alice", setting(reasoning=f"{name}{i}"), cause="demo", attempts=20
                )
            except VersionConflict:
                lost += 1  # every attempt lost its race: the caller is told, nothing written
                continue
            assert done is not None
            committed.append(done.version)

    await asyncio.gather(commits(a, "a"), commits(b, "b"))

    stored = await a.store.inner.get_state("alice")
    assert stored is not None
    assert len(committed) + lost == 24
    assert sorted(committed) == list(range(2, stored.version + 1))  # each once, none lost
    assert conflicts(a) + conflicts(b) > 0  # they did race


async def test_nothing_to_change_on_a_stale_kept_state_is_checked_with_the_store(
    nodes: Any,
) -> None:
    a: Node = await nodes()
    b: Node = await nodes()
    await a.state.update("alice", setting(mood="happy"), cause="demo")  # a keeps "happy"
    await b.state.update("alice", setting(mood="tired"), cause="demo")

    committed = await a.state.update("alice", setting(mood="happy"), cause="demo")

    assert committed is not None and (committed.version, committed.mood) == (3, "happy")


async def test_a_profile_changed_on_another_node_is_not_overwritten_by_a_kept_state(
    nodes: Any,
) -> None:
    a: Node = await nodes()
    b: Node = await nodes()
    await a.state.update("alice", setting(mood="happy"), cause="demo")
    await b.state.change_profile("alice", lambda p: replace(p, tier="premium"))  # same version

    committed = await a.state.update("alice", setting(mood="tired"), cause="demo")

    assert committed is not None and committed.profile.tier == "premium"
    stored = await a.store.inner.get_state("alice")
    assert stored is not None and (stored.mood, stored.profile.tier) == ("tired", "premium")


async def test_an_erase_drops_the_kept_state(nodes: Any) -> None:
    node: Node = await nodes(exclusive=True)
    await node.state.update("alice", setting(mood="happy"), cause="demo")
    await node.store.inner.delete_user("alice")

    node.state.forget("alice")  # the erase hook
    current = await node.state.current("alice")

    # the defaults at the erase's own version (one past the erased state's), a new epoch
    assert (current.version, current.mood, current.epoch) == (2, "content", 1)


# --- the bounded map itself (no store) ---------------------------------------------------


def test_the_least_recently_used_user_goes_past_the_bound() -> None:
    kept = CurrentStates(max_users=2)
    for user in ("a", "b"):
        kept.keep(UserState(user, version=1), kept.ticket())
    assert kept.get("a") is not None  # "b" is now the least recently used

    kept.keep(UserState("c", version=1), kept.ticket())

    assert (kept.get("a"), kept.get("b")) != (None, None)
    assert kept.get("b") is None and len(kept) == 2


def test_a_read_that_began_before_a_drop_is_not_kept() -> None:
    kept = CurrentStates()
    ticket = kept.ticket()  # a store read starts
    kept.drop("alice")  # an erase meanwhile

    kept.keep(UserState("alice", version=7), ticket)

    assert kept.get("alice") is None


def test_an_older_state_never_replaces_a_newer_one() -> None:
    kept = CurrentStates()
    kept.keep(UserState("alice", version=5), kept.ticket())

    kept.keep(UserState("alice", version=4), kept.ticket())  # a slow read, after a commit

    kept_state = kept.get("alice")
    assert kept_state is not None and kept_state.version == 5


def test_a_newer_delta_from_the_broker_drops_the_kept_state_and_our_own_does_not() -> None:
    kept = CurrentStates()
    kept.keep(UserState("alice", version=5), kept.ticket())

    kept.heard("alice", 5)  # our own commit, heard back
    assert kept.get("alice") is not None
    kept.heard("alice", 6)  # another node's

    assert kept.get("alice") is None


def test_zero_users_keeps_nothing() -> None:
    kept = CurrentStates(max_users=0)

    kept.keep(UserState("alice", version=1), kept.ticket())

    assert kept.get("alice") is None
