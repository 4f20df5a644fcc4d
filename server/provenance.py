"""How a decision was reached: the model, its cost and the features it saw.

A commit listener hears ``(previous, committed, cause)``: what changed, not how the change
was decided. The code that decides (the analysis pipeline) knows more — which model
answered, what it cost, a summary of the features, why the rules answered instead — and
hands it to the decision history with :func:`attach` around the commit it causes::

    how = Provenance(model="claude-haiku-4-5", cost_usd=0.0004,
                     features=summarize_features(request.features))
    with provenance.attach(how, cause="analysis"):
        await react(state, user_id, assessment)

**Why a context variable.** The decision and the commit it causes run in one task
(:meth:`~server.state.StateService.update` awaits its listeners inline), so a context
variable carries the provenance from one to the other without a parameter through the
state service. Two guards keep it from being pinned on the wrong version: it applies only
to a commit with the ``cause`` it was attached for (the avatar saga's own commits, in
tasks that inherit the context, have cause ``avatar``), and only once (:func:`take`), so a
second commit inside the same block does not repeat the model's cost. When the state
service passes a provenance to its listeners explicitly, this module's record stays and the
context variable goes.

Everything here is pure: no I/O, nothing logged.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, fields
from typing import Final

from brain.features import Features

FeatureValue = float | int | str | bool | None

MAX_FEATURES: Final = 32
"""Features a summary keeps (the first ones by name); a summary is a glance, not a dump."""
MAX_TEXT: Final = 64
"""Characters a model name, fallback reason, feature name or text value keeps."""


@dataclass(frozen=True, slots=True)
class Provenance:
    """How one decision was reached; every field is optional (``None``: not known).

    ``features`` maps a feature's name to its (rounded) value; ``fallback`` says why the
    rules answered instead of the model (``timeout``, ``budget``…).
    """

    model: str | None = None
    cost_usd: float | None = None
    features: Mapping[str, FeatureValue] | None = None
    fallback: str | None = None

    def bounded(self) -> Provenance:
        """This provenance cut to what the history keeps: at most :data:`MAX_FEATURES`
        features, texts of at most :data:`MAX_TEXT` characters, finite numbers only."""
        features = None
        if self.features is not None:
            features = {
                name[:MAX_TEXT]: _bounded_value(value)
                for name, value in sorted(self.features.items())[:MAX_FEATURES]
            }
        cost = self.cost_usd
        if cost is not None and not (math.isfinite(cost) and cost >= 0):
            cost = None
        return Provenance(
            model=None if self.model is None else self.model[:MAX_TEXT],
            cost_usd=cost,
            features=features,
            fallback=None if self.fallback is None else self.fallback[:MAX_TEXT],
        )


def summarize_features(features: Features) -> dict[str, FeatureValue]:
    """The features an analysis saw, as a history keeps them: every field that has a value
    but the analysis time, numbers rounded to two decimals."""
    summary: dict[str, FeatureValue] = {}
    for item in fields(features):
        value = getattr(features, item.name)
        if item.name == "now_ms" or value is None:
            continue
        summary[item.name] = round(value, 2) if isinstance(value, float) else value
    return summary


def _bounded_value(value: FeatureValue) -> FeatureValue:
    if isinstance(value, str):
        return value[:MAX_TEXT]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass(slots=True)
class _Slot:
    """A provenance waiting for the commit it was attached for (mutable: taken once)."""

    provenance: Provenance
    cause: str
    taken: bool = field(default=False)


_current: ContextVar[_Slot | None] = ContextVar("companion_provenance", default=None)


@contextmanager
def attach(provenance: Provenance, *, cause: str) -> Iterator[None]:
    """Within the block, the next commit with ``cause`` in this task is recorded with
    ``provenance``."""
    reset = _current.set(_Slot(provenance, cause))
    try:
        yield
    finally:
        _current.reset(reset)


def take(cause: str) -> Provenance | None:
    """The provenance attached for a commit with ``cause``, once; ``None`` when there is
    none, it was attached for another cause, or it was taken already."""
    slot = _current.get()
    if slot is None or slot.taken or slot.cause != cause:
        return None
    slot.taken = True
    return slot.provenance
