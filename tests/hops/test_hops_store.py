"""The last-seen and command tables: the same contract on SQLite and DynamoDB Local."""

from __future__ import annotations

import time
from typing import Any

import pytest

from server.hops.commands import issue
from server.store.base import DeviceSeen, Store
from tests.stores import DynamoDBStoreFactory, dynamodb_store_factory, store

__all__ = ["dynamodb_store_factory", "store"]  # fixtures

# Recent, not fixed: DynamoDB Local's TTL sweep deletes items whose purge_at has passed, and
# a fixed date in the past would let it remove the commands while a test reads them.
T0 = int(time.time() * 1000)


async def test_a_device_has_one_record_the_newest(store: Store) -> None:
    await store.put_seen(DeviceSeen("alice", "watch-1", "watch", 3, T0))
    await store.put_seen(DeviceSeen("alice", "watch-1", "watch", 5, T0 + 10))
    await store.put_seen(DeviceSeen("alice", "phone", "phone", 6, T0 + 20))
    await store.put_seen(DeviceSeen("bob", "phone", "phone", 1, T0))
    assert await store.devices_seen("alice") == [
        DeviceSeen("alice", "phone", "phone", 6, T0 + 20),
        DeviceSeen("alice", "watch-1", "watch", 5, T0 + 10),
    ]
    assert await store.devices_seen("nobody") == []


async def test_recording_a_command_again_never_resets_its_outcome(store: Store) -> None:
    commands = issue("alice", 2, ["rest", "hydrate"], T0)
    await store.put_commands(commands)
    rest = commands[0]
    settled = await store.settle_command("alice", rest.command_id, "done", device="w", at=T0 + 5)
    assert settled is not None and settled.outcome == "done"
    await store.put_commands(commands)  # a retried commit listener
    listed = {c.command_id: c for c in await store.commands_of("alice")}
    assert listed[rest.command_id].outcome == "done"
    assert listed[rest.command_id].device == "w"
    assert listed[commands[1].command_id].outcome == "pending"
    assert listed[commands[1].command_id].params == {"ml": 250}


async def test_a_command_is_settled_once_the_first_answer_counts(store: Store) -> None:
    (command,) = issue("alice", 2, ["rest"], T0)
    await store.put_commands([command])
    first = await store.settle_command(
        "alice", command.command_id, "dismissed", device="w", at=T0 + 1
    )
    second = await store.settle_command("alice", command.command_id, "done", device="p", at=T0 + 2)
    assert first is not None and second is not None
    assert (second.outcome, second.outcome_at, second.device) == ("dismissed", T0 + 1, "w")


async def test_an_answer_after_the_expiry_records_expired(store: Store) -> None:
    (command,) = issue("alice", 2, ["rest"], T0)
    await store.put_commands([command])
    late = command.expires_at + 1
    settled = await store.settle_command("alice", command.command_id, "done", device="w", at=late)
    assert settled is not None and settled.outcome == "expired"


@pytest.mark.dynamodb
async def test_a_command_recorded_between_the_two_updates_takes_the_answer(
    dynamodb_store_factory: DynamoDBStoreFactory,
) -> None:
    """A fast watch's answer racing the commit listener's put: the command turns up pending
    after the first conditional update missed it. The answer is recorded, not ``expired``
    (the second update's condition is the expiry itself, and the pair runs again)."""
    (command,) = issue("alice", 2, ["rest"], T0)
    async with dynamodb_store_factory() as dynamodb:
        client = dynamodb.client
        update_item = client.update_item
        calls = 0

        async def put_after_first_update(**kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            try:
                return await update_item(**kwargs)
            finally:
                if calls == 1:
                    await dynamodb.put_commands([command])

        client.update_item = put_after_first_update  # type: ignore[method-assign]
        try:
            settled = await dynamodb.settle_command(
                "alice", command.command_id, "done", device="watch-1", at=T0 + 5
            )
        finally:
            del client.update_item  # the class's method again
    assert settled is not None
    assert (settled.outcome, settled.device, settled.outcome_at) == ("done", "watch-1", T0 + 5)
    assert calls == 3  # missed, missed (not expired), then recorded


async def test_settling_an_unknown_command_finds_nothing(store: Store) -> None:
    (command,) = issue("alice", 2, ["rest"], T0)
    assert (
        await store.settle_command("alice", command.command_id, "done", device=None, at=T0) is None
    )
    await store.put_commands([command])
    assert await store.settle_command("bob", command.command_id, "done", device=None, at=T0) is None


async def test_commands_are_listed_newest_first_up_to_the_limit(store: Store) -> None:
    for version in range(1, 6):
        await store.put_commands(issue("alice", version, ["move"], T0 + version))
    listed = await store.commands_of("alice", limit=3)
    assert [c.version for c in listed] == [5, 4, 3]


async def test_erasing_a_user_erases_devices_and_commands(store: Store) -> None:
    await store.put_seen(DeviceSeen("alice", "watch-1", "watch", 3, T0))
    await store.put_commands(issue("alice", 2, ["rest", "move"], T0))
    await store.put_seen(DeviceSeen("bob", "watch-1", "watch", 3, T0))
    deleted = await store.delete_user("alice")
    assert deleted >= 3
    assert await store.devices_seen("alice") == []
    assert await store.commands_of("alice") == []
    assert len(await store.devices_seen("bob")) == 1
