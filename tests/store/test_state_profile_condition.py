"""The store contract of ``put_state``'s profile condition, on each adapter.

A writer that commits on a state it kept in memory names the profile it read
(``expected_profile``): a profile changed since (by another node, or ``companion users
tier``) makes the write a lost race, never an overwrite of the new persona or tier.
"""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from brain.model import CoachStyle, Profile
from server.errors import VersionConflict
from server.store.base import Store, UserState
from server.store.sqlite import SQLiteStore

PREMIUM = Profile(tier="premium")
STRICT = Profile(style=CoachStyle.STRICT)


def at(version: int, **changes: object) -> UserState:
    return replace(UserState(user_id="alice", version=version), **changes).rehashed()


async def test_a_write_naming_the_stored_profile_succeeds(store: Store) -> None:
    await store.put_state(at(1, profile=PREMIUM), expected_version=0)

    await store.put_state(at(2, mood="happy", profile=PREMIUM), 1, expected_profile=PREMIUM)

    stored = await store.get_state("alice")
    assert stored is not None and (stored.version, stored.mood) == (2, "happy")
    assert stored.profile == PREMIUM


async def test_a_write_naming_an_older_profile_conflicts_and_keeps_the_new_one(
    store: Store,
) -> None:
    await store.put_state(at(1), expected_version=0)
    await store.put_state(at(1, profile=PREMIUM), 1, expected_profile=Profile())  # tier set

    with pytest.raises(VersionConflict) as conflict:
        # A commit decided on the state read before the tier was set.
        await store.put_state(at(2, mood="happy"), 1, expected_profile=Profile())

    assert conflict.value.found == 1
    stored = await store.get_state("alice")
    assert stored is not None and (stored.version, stored.mood) == (1, "content")
    assert stored.profile == PREMIUM


async def test_two_profile_changes_of_one_version_one_wins(store: Store) -> None:
    await store.put_state(at(1), expected_version=0)

    await store.put_state(at(1, profile=PREMIUM), 1, expected_profile=Profile())
    with pytest.raises(VersionConflict):
        await store.put_state(at(1, profile=STRICT), 1, expected_profile=Profile())

    stored = await store.get_state("alice")
    assert stored is not None and stored.profile == PREMIUM


async def test_a_write_on_a_tombstone_is_not_held_by_the_profile(store: Store) -> None:
    await store.put_state(at(1, profile=PREMIUM), expected_version=0)
    await store.delete_user("alice")
    tombstone = await store.tombstone("alice")

    after = replace(at(tombstone.version + 1), epoch=tombstone.epoch).rehashed()
    await store.put_state(after, tombstone.version, expected_profile=Profile())

    stored = await store.get_state("alice")
    assert stored is not None and stored.version == tombstone.version + 1


async def test_without_a_profile_named_the_write_is_held_by_version_and_epoch_only(
    store: Store,
) -> None:
    await store.put_state(at(1, profile=PREMIUM), expected_version=0)

    await store.put_state(at(2, mood="happy"), 1)

    stored = await store.get_state("alice")
    assert stored is not None and stored.version == 2 and stored.profile == Profile()


async def test_a_profile_stored_in_an_older_spelling_still_matches(tmp_path: Path) -> None:
    """A row written before the tier existed spells its profile without it: the same
    profile to the reader, so a write naming it is not a conflict."""
    path = tmp_path / "old.sqlite3"
    store = SQLiteStore(path)
    await store.open()
    try:
        await store.put_state(at(1), expected_version=0)
        with sqlite3.connect(path) as old_release:
            old_release.execute(
                "UPDATE user_state SET profile = ? WHERE user_id = 'alice'",
                ('{"tone": "gentle", "style": "encouraging", "base_avatar": "fox"}',),
            )

        await store.put_state(at(2, mood="happy"), 1, expected_profile=Profile())

        stored = await store.get_state("alice")
        assert stored is not None and (stored.version, stored.mood) == (2, "happy")
    finally:
        await store.close()
