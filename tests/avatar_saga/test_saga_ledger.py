"""The saga ledger of two nodes on one SQLite store, with an injected clock: leases are
renewed while a saga runs, taken over only once they end, and let go by the loser."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator

import pytest

from server.avatar.durable import SagaLedger
from server.store.sqlite import SQLiteStore

LEASE_S = 60.0
T0 = 1_764_547_200.0


@pytest.fixture
async def store(tmp_path: pathlib.Path) -> AsyncIterator[SQLiteStore]:
    opened = SQLiteStore(tmp_path / "store.sqlite3")
    await opened.open()
    yield opened
    await opened.close()


async def test_a_renewed_lease_keeps_other_nodes_away_and_a_lapsed_one_does_not(
    store: SQLiteStore,
) -> None:
    """Node A renews at 40 s, so B cannot claim at 70 s; A stops renewing, B claims at 101 s
    and A, renewing again, lets go of the saga."""
    now = [T0]
    a = SagaLedger(store, owner="a:1", lease_s=LEASE_S, clock=lambda: now[0])
    b = SagaLedger(store, owner="b:1", lease_s=LEASE_S, clock=lambda: now[0])
    record = await a.begin("ann", "c" * 64)
    assert a.held == {record.saga_id}
    assert await a.claimable() == []  # running here: not resumed twice

    now[0] = T0 + 40
    await a.renew()
    now[0] = T0 + 70
    assert await b.claimable() == []

    now[0] = T0 + 101
    (taken,) = await b.claimable()
    assert (taken.saga_id, taken.owner, taken.attempts) == (record.saga_id, "b:1", 2)
    assert b.held == {record.saga_id}
    await a.renew()
    assert a.held == frozenset()

    await b.end(taken)
    assert b.held == frozenset()
    assert await store.resumable_sagas("a:1", now_ms=2**62) == []


async def test_a_restarted_node_claims_its_own_saga_at_once(store: SQLiteStore) -> None:
    """The same owner name after a restart (a new ledger) resumes before the lease ends."""
    now = [T0]
    before = SagaLedger(store, owner="a:1", lease_s=LEASE_S, clock=lambda: now[0])
    record = await before.begin("ann", "c" * 64)
    after = SagaLedger(store, owner="a:1", lease_s=LEASE_S, clock=lambda: now[0])
    now[0] = T0 + 1
    (mine,) = await after.claimable()
    assert (mine.saga_id, mine.attempts) == (record.saga_id, 2)


def test_a_ledger_needs_a_positive_lease() -> None:
    with pytest.raises(ValueError, match="lease_s"):
        SagaLedger(None, owner="a", lease_s=0, clock=lambda: T0)  # type: ignore[arg-type]
