"""The store contract of the durable avatar saga, on each adapter: sagas in flight with
their leases, and the dead-letter list."""

from __future__ import annotations

import asyncio

from server.store.base import DeadLetter, SagaRecord, Store

NOW = 1_764_547_200_000
LEASE = 60_000


def record(user_id: str, saga_id: str = "s1", *, owner: str = "node-a", **kw: int) -> SagaRecord:
    lease_until = kw.pop("lease_until", NOW + LEASE)
    return SagaRecord(user_id, saga_id, "c" * 64, owner, NOW, lease_until, **kw)


async def test_a_saga_in_flight_is_resumable_only_by_its_owner_until_its_lease_ends(
    store: Store,
) -> None:
    """Before the lease ends only the owner sees it; after, every node does."""
    await store.put_saga(record("ann"))
    assert await store.resumable_sagas("node-a", now_ms=NOW) == [record("ann")]
    assert await store.resumable_sagas("node-b", now_ms=NOW) == []
    assert await store.resumable_sagas("node-b", now_ms=NOW + LEASE) == [record("ann")]


async def test_only_one_of_two_nodes_claims_an_expired_saga(store: Store) -> None:
    """Two claims at once after the lease: one wins (one more attempt), the other gets None;
    a claim before the lease ends fails for another node."""
    await store.put_saga(record("ann"))
    early = await store.claim_saga("ann", "s1", "node-b", now_ms=NOW, lease_until=NOW + 1)
    assert early is None
    later = NOW + LEASE
    claims = await asyncio.gather(
        store.claim_saga("ann", "s1", "node-b", now_ms=later, lease_until=later + LEASE),
        store.claim_saga("ann", "s1", "node-c", now_ms=later, lease_until=later + LEASE),
    )
    won = [claim for claim in claims if claim is not None]
    assert len(won) == 1
    assert won[0].attempts == 2 and won[0].lease_until == later + LEASE
    assert won[0].owner in {"node-b", "node-c"}
    assert await store.resumable_sagas("node-a", now_ms=later) == []


async def test_the_owner_renews_and_ends_its_saga_but_not_a_newer_one(store: Store) -> None:
    """Renewal needs the owner and the saga id; ending an old saga leaves the newer record."""
    await store.put_saga(record("ann"))
    assert await store.renew_saga("ann", "s1", "node-a", NOW + 5 * LEASE)
    assert not await store.renew_saga("ann", "s1", "node-b", NOW + 5 * LEASE)
    assert await store.resumable_sagas("node-b", now_ms=NOW + 2 * LEASE) == []
    await store.put_saga(record("ann", "s2"))  # a newer state started a new saga
    await store.end_saga("ann", "s1")
    assert [r.saga_id for r in await store.resumable_sagas("node-a", now_ms=NOW)] == ["s2"]
    assert not await store.renew_saga("ann", "s1", "node-a", NOW + LEASE)
    assert await store.claim_saga("ann", "s1", "node-a", now_ms=NOW, lease_until=NOW) is None
    await store.end_saga("ann", "s2")
    await store.end_saga("ann", "s2")  # idempotent
    assert await store.resumable_sagas("node-a", now_ms=NOW + LEASE) == []


async def test_dead_letters_are_listed_oldest_first_and_removed_one_by_one(store: Store) -> None:
    """Letters keep reason, time and prompt hash; removal is by key and idempotent."""
    first = DeadLetter("bob", NOW, "s1", "a" * 64, "GenerationError: 503", "stressed", "anxious")
    second = DeadLetter("ann", NOW + 1, "s2", "b" * 64, "refused", "calm", "happy", attempts=3)
    again = DeadLetter("bob", NOW + 2, "s3", "a" * 64, "timeout", "stressed", "anxious")
    for letter in (again, second, first):
        await store.add_dead_letter(letter)
    assert await store.dead_letters() == [first, second, again]
    assert await store.dead_letters(limit=1) == [first]
    await store.remove_dead_letter("bob", first.key)
    await store.remove_dead_letter("bob", first.key)
    assert await store.dead_letters() == [second, again]


async def test_erasing_a_user_erases_the_saga_and_the_dead_letters(store: Store) -> None:
    """GDPR: nothing of the user's sagas is left, other users' are."""
    await store.put_saga(record("ann"))
    await store.put_saga(record("bob"))
    await store.add_dead_letter(DeadLetter("ann", NOW, "s0", "a" * 64, "x", "calm", "happy"))
    assert await store.delete_user("ann") == 2
    assert [r.user_id for r in await store.resumable_sagas("node-a", now_ms=NOW)] == ["bob"]
    assert await store.dead_letters() == []
