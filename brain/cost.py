"""What one user costs, per UTC day and service: :class:`CostPerUser`, and when it is too much.

The services are a fixed set (:class:`Service`), so a metric labelled by service stays
bounded. Dollars come from the dated table of :mod:`brain.prices` (LLM calls are priced by
the guard with :mod:`brain.analyst.pricing` and arrive here as dollars). A day is an
*anomaly* when its total is over the tier's :attr:`~brain.tiers.Tier.day_cost_alert_usd`:
the guard's budget stops the LLM long before, so an anomaly means something else runs away
(a device streaming far too fast, an avatar loop, a bug) and an operator should look.

Pure: values and arithmetic, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from brain.tiers import Tier


class Service(StrEnum):
    """What a user's day is billed for (a fixed set: a metric label)."""

    LLM = "llm"
    IMAGES = "images"
    CLIPS = "clips"
    STORAGE = "storage"
    """Frame writes, estimated from the frames stored (:func:`brain.prices.frames_cost`)."""
    PUSHES = "pushes"


def _no_costs() -> Mapping[Service, float]:
    return MappingProxyType(dict.fromkeys(Service, 0.0))


@dataclass(frozen=True, slots=True)
class CostPerUser:
    """One user's dollars on one UTC day (``YYYY-MM-DD``), by service."""

    user_id: str
    day: str
    tier: str
    by_service: Mapping[Service, float] = field(default_factory=_no_costs)

    @property
    def total_usd(self) -> float:
        """The day's dollars over all services."""
        return sum(self.by_service.values())

    def plus(self, service: Service, usd: float, *, tier: str | None = None) -> CostPerUser:
        """The day with ``usd`` more for ``service`` (and the user's tier now, if given).

        Raises :class:`ValueError` for negative dollars: a cost never goes back.
        """
        if usd < 0:
            raise ValueError(f"a cost is never negative, got {usd}")
        costs = dict(self.by_service)
        costs[service] = costs.get(service, 0.0) + usd
        return CostPerUser(
            self.user_id,
            self.day,
            self.tier if tier is None else tier,
            MappingProxyType(costs),
        )

    def anomalous(self, tier: Tier) -> bool:
        """Whether the day costs more than ``tier`` allows for a day."""
        return self.total_usd > tier.day_cost_alert_usd

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: ``user_id``, ``day``, ``tier``, ``total_usd`` and ``by_service``."""
        return {
            "user_id": self.user_id,
            "day": self.day,
            "tier": self.tier,
            "total_usd": round(self.total_usd, 9),
            "by_service": {s.value: round(v, 9) for s, v in self.by_service.items()},
        }
