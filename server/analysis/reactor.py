"""The reactor: turn an assessment into a new state version only when it matters.

:func:`changes_for` is the pure decision: compared with the user's current state, only a
change of state, mood or energy *band* (:meth:`~brain.model.EnergyBand.of`), a change of
the evidence the reasoning rests on (:func:`brain.coaching.evidence`: none → a first
impression → a full window), or ``force`` is worth a version. Energy moving inside its band,
or a reworded reasoning on the same evidence, is not: every version is a delta to every
device and may start an avatar generation, so the reactor keeps them rare.

**Decision: when a reasoning alone is worth a version.** Only when its evidence changes. A
device that shows "Not enough data yet" must learn that the data came even when the state
stays calm; but the numbers a reasoning quotes move with every frame, and a version per
analysis (every second for a streaming phone) would churn versions. The evidence can only
step up as frames arrive (twice per situation at most) or back when a window thins out, so
this cannot churn. When it commits, it writes the whole assessment (state, mood, energy,
reasoning, actions, source) and its health metrics, when the analysis computed them.

**Decision: when health metrics alone are worth a version.** When the days they come from
say something else (:func:`brain.health.days_moved`: fatigue, sleep hours, HRV trend), which
happens at most when the pipeline reads the stored days again (hourly). The window's
stress moves with every frame: it rides along with a version made for another reason.

:func:`react` runs that decision inside :meth:`~server.state.StateService.update`, which
re-reads the state and decides again after a lost version race.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from brain.coaching import evidence
from brain.health import days_moved
from brain.model import Assessment, EnergyBand
from server.state import StateService
from server.store.base import UserState

CAUSE = "analysis"
"""The commit cause the reactor's versions are counted under."""


def significant(current: UserState, assessment: Assessment) -> bool:
    """Whether ``assessment`` differs from ``current`` in state, mood, energy band, the
    evidence its reasoning rests on, or the days its health metrics come from."""
    return (
        current.state != assessment.state.value
        or current.mood != assessment.mood.value
        or EnergyBand.of(current.energy) is not assessment.band
        or evidence(current.reasoning) != evidence(assessment.reasoning)
        or (assessment.health is not None and days_moved(current.health, assessment.health))
    )


def changes_for(
    current: UserState, assessment: Assessment, *, force: bool = False
) -> dict[str, Any] | None:
    """The fields to commit for ``assessment`` on top of ``current``, or ``None`` for none."""
    if not (force or significant(current, assessment)):
        return None
    changes: dict[str, Any] = {
        "state": assessment.state.value,
        "mood": assessment.mood.value,
        "energy": assessment.energy,
        "reasoning": assessment.reasoning,
        "actions": tuple(a.value for a in assessment.actions),
        "source": assessment.source.value,
    }
    if assessment.health is not None:
        changes["health"] = assessment.health
    return changes


async def react(
    state: StateService,
    user_id: str,
    assessment: Assessment,
    *,
    force: bool = False,
    valid: Callable[[], bool] = lambda: True,
    epoch: int | None = None,
) -> UserState | None:
    """Commit ``assessment`` for ``user_id`` if it is a change (or ``force``).

    ``valid`` is asked each time the commit is decided (after every read of the state);
    ``False`` commits nothing: the user was erased while the analysis ran. Deciding on a
    fresh read and writing conditionally on its version closes the race: a write decided
    before the erase either lands before the delete (and is deleted) or conflicts with it
    and is decided again, now invalid. ``epoch`` is the user's erase epoch the analysis read
    before its frames: the commit is conditional on it, on any node (see
    :meth:`~server.state.StateService.update`).

    Returns the committed state, or ``None`` when nothing changed. Raises
    :class:`~server.errors.VersionConflict` when every attempt lost its race.
    """

    def decide(current: UserState) -> dict[str, Any] | None:
        if not valid():
            return None
        return changes_for(current, assessment, force=force)

    return await state.update(user_id, decide, cause=CAUSE, epoch=epoch)
