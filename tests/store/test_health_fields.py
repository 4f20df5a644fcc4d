"""The health metrics of a user's state (``health``) in both stores, and the state hash."""

from __future__ import annotations

from brain.hashing import state_hash
from brain.health import HealthMetrics
from server.store.base import Store, UserState
from tests.store.test_contract import committed

TIRED = HealthMetrics(61, "moderate", 40, (7.1, 6.0, 4.5), (27.7, 25.1, 23.6), 45)
THIN = HealthMetrics(None, None, None, (), (), None)


async def test_health_metrics_round_trip_with_decimals_and_unknowns(store: Store) -> None:
    await store.put_state(committed("alice", 1, health=TIRED), expected_version=0)
    await store.put_state(committed("bob", 1, health=THIN), expected_version=0)
    await store.put_state(committed("carol", 1), expected_version=0)

    assert (await store.get_state("alice")) == committed("alice", 1, health=TIRED)
    assert (await store.get_state("bob")) == committed("bob", 1, health=THIN)
    carol = await store.get_state("carol")
    assert carol is not None and carol.health is None


def test_the_state_hash_covers_the_health_metrics() -> None:
    plain = UserState("dan")
    hashes = {
        state_hash(state.visible())
        for state in (plain, committed("dan", 0, health=TIRED), committed("dan", 0, health=THIN))
    }
    assert len(hashes) == 3
