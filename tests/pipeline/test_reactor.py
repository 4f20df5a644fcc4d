"""Reactor: a new version only for a change of state, mood or energy band (or force)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from brain.model import Action, Assessment, Mood, Source, State
from server.analysis.reactor import changes_for, react
from server.broker.memory import MemoryBroker
from server.metrics import Metrics
from server.push.hub import Hub
from server.state import StateService
from server.store.base import UserState
from server.store.sqlite import SQLiteStore

WHY = "HR climbing while still."
STRESSED = Assessment(State.STRESSED, Mood.ANXIOUS, 55, WHY, (Action.BREATHING,))


def test_the_same_assessment_twice_is_no_change() -> None:
    current = replace(
        UserState.initial("u"), state="stressed", mood="anxious", energy=60, reasoning=WHY
    )
    assert changes_for(current, STRESSED) is None


def test_energy_moving_inside_its_band_is_no_change() -> None:
    current = replace(
        UserState.initial("u"), state="stressed", mood="anxious", energy=40, reasoning=WHY
    )
    assert changes_for(current, replace(STRESSED, energy=66)) is None


def test_an_energy_band_change_is_a_change() -> None:
    current = replace(
        UserState.initial("u"), state="stressed", mood="anxious", energy=40, reasoning=WHY
    )
    changes = changes_for(current, replace(STRESSED, energy=30))
    assert changes is not None and changes["energy"] == 30


def test_a_reasoning_reworded_on_the_same_evidence_is_no_change() -> None:
    current = replace(
        UserState.initial("u"), state="stressed", mood="anxious", energy=60, reasoning=WHY
    )
    assert changes_for(current, replace(STRESSED, reasoning="HR at 91 bpm, still.")) is None


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("Not enough data yet (2 frames over 0 min), so assuming calm.", "First impression (9…"),
        ("First impression (9 frames over 8 s): steady.", "Your heart is steady at 70 bpm."),
        ("", "First impression (9 frames over 8 s): steady."),
    ],
)
def test_a_reasoning_on_new_evidence_is_a_change(before: str, after: str) -> None:
    current = replace(UserState.initial("u"), energy=60, reasoning=before)
    calm = Assessment(State.CALM, Mood.CONTENT, 62, after)
    changes = changes_for(current, calm)
    assert changes is not None and changes["reasoning"] == after


def test_force_commits_even_without_a_change() -> None:
    current = replace(
        UserState.initial("u"), state="stressed", mood="anxious", energy=55, reasoning=WHY
    )
    changes = changes_for(current, STRESSED, force=True)
    assert changes == {
        "state": "stressed",
        "mood": "anxious",
        "energy": 55,
        "reasoning": "HR climbing while still.",
        "actions": ("breathing_session",),
        "source": "rules",
    }


class RacingStore:
    """A store whose next state write loses a race to ``rival`` (another node's commit)."""

    def __init__(self, inner: SQLiteStore) -> None:
        self.inner = inner
        self.rival: dict[str, Any] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def put_state(
        self, state: UserState, expected_version: int, *, expected_profile: Any = None
    ) -> None:
        if self.rival is not None:
            rival, self.rival = self.rival, None
            current = await self.inner.get_state(state.user_id) or UserState.initial(state.user_id)
            won = replace(current, **rival, version=current.version + 1).rehashed()
            await self.inner.put_state(won, current.version)
        await self.inner.put_state(state, expected_version, expected_profile=expected_profile)


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[tuple[StateService, RacingStore, Metrics]]:
    inner = SQLiteStore(tmp_path / "s.sqlite3")
    await inner.open()
    store = RacingStore(inner)
    metrics = Metrics()
    broker = MemoryBroker()
    hub = Hub(broker, metrics)
    await hub.start()
    yield StateService(store, hub, metrics, time.time), store, metrics  # type: ignore[arg-type]
    await broker.close()
    await inner.close()


async def test_same_state_twice_writes_one_version(service: Any) -> None:
    state, _, _ = service
    first = await react(state, "u", STRESSED)
    again = await react(state, "u", replace(STRESSED, energy=50, reasoning="Still climbing."))
    assert first is not None and first.version == 1
    assert again is None
    assert (await state.current("u")).version == 1


async def test_a_band_change_writes_a_new_version(service: Any) -> None:
    state, _, _ = service
    await react(state, "u", STRESSED)
    lower = await react(state, "u", replace(STRESSED, energy=20))
    assert lower is not None and lower.version == 2 and lower.energy == 20


async def test_a_lost_race_re_reads_and_decides_again(service: Any) -> None:
    state, store, metrics = service
    await react(state, "u", STRESSED)
    store.rival = {"state": "exercising", "mood": "energized"}
    committed = await react(state, "u", replace(STRESSED, energy=20, source=Source.LLM))
    assert metrics.commit_conflicts._value.get() == 1
    assert committed is not None
    assert (committed.version, committed.state, committed.source) == (3, "stressed", "llm")


async def test_a_lost_race_to_the_same_answer_writes_nothing_more(service: Any) -> None:
    state, store, _ = service
    await react(state, "u", replace(STRESSED, energy=20))
    store.rival = {"state": "stressed", "mood": "anxious", "energy": 55}
    assert await react(state, "u", STRESSED) is None
    assert (await state.current("u")).version == 2
