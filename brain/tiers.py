"""Tiers: what a user is entitled to, by name (``free``, ``premium``), and what it may cost.

A :class:`Tier` bundles every per-user limit the server enforces: the LLM budget per UTC
day (:class:`~brain.analyst.guard.DailyBudget`), how often a window may reach the LLM
(:class:`~brain.analyst.trigger.TriggerCaps`), the analysis debounce, avatar generations per
day and avatar cache lifetime, the REST and WebSocket rate limits, and the day's cost above
which a user is an anomaly. :class:`Tiers` is the operator's table (``COMPANION_TIERS``);
a user's tier is a name kept with the profile (:attr:`brain.model.Profile.tier`), and a name
the table does not know reads as the default tier, so a tier removed from the settings
degrades its users instead of failing them.

Going over a limit never fails a request: it degrades (the rules answer instead of Claude,
the cached or previous image stays, analyses run less often) and names why with a
:class:`Limit`, a fixed set, so metric labels stay bounded. Tier names are bounded too:
at most :data:`MAX_TIERS`, of :data:`NAME_PATTERN`.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields, replace
from enum import StrEnum
from typing import Any, Final

from brain.analyst.guard import DailyBudget
from brain.analyst.trigger import HOUR_MS, TriggerCaps
from brain.model import Profile

DEFAULT_TIER: Final = "free"
MAX_TIERS: Final = 8
NAME_PATTERN: Final = re.compile(r"[a-z][a-z0-9_-]{0,31}")
DAY_S: Final = 86_400


FREE_BUDGET: Final = DailyBudget(calls=48, tokens=200_000, cost_usd=0.10)
FREE_CAPS: Final = TriggerCaps()


class Limit(StrEnum):
    """Which tier limit a request went over (a fixed set: a metric label and a reason)."""

    LLM_BUDGET = "llm_budget"
    LLM_CAP = "llm_cap"
    AVATAR_DAILY = "avatar_daily"
    REST_RATE = "rest_rate"
    WS_RATE = "ws_rate"


@dataclass(frozen=True, slots=True)
class Tier:
    """One tier's limits; raises :class:`ValueError` on a name or a limit out of range."""

    name: str
    llm_budget: DailyBudget = FREE_BUDGET
    llm_caps: TriggerCaps = FREE_CAPS
    debounce_ms: int = 5_000
    """Quiet time after frames before the user's analysis starts (its frequency)."""
    avatar_generations_per_day: int = 12
    avatar_cache_ttl_s: int = 30 * DAY_S
    """How long a cached avatar image is reused before it is generated afresh."""
    rest_rate_per_s: float = 5.0
    rest_rate_burst: int = 30
    ws_rate_per_s: float = 20.0
    ws_rate_burst: int = 60
    """Messages a second (and burst) one WebSocket connection of the tier's users may send,
    never less than the node's ``COMPANION_RATE_PER_S`` / ``_BURST``, which are the default
    tier's own (server.push.session.SessionLimits)."""
    day_cost_alert_usd: float = 0.20
    """A user's day costing more than this (all services) is an anomaly."""

    def __post_init__(self) -> None:
        if not NAME_PATTERN.fullmatch(self.name):
            raise ValueError(f"a tier name must match {NAME_PATTERN.pattern}, got {self.name!r}")
        numbers = {
            "debounce_ms": self.debounce_ms,
            "avatar_generations_per_day": self.avatar_generations_per_day,
            "avatar_cache_ttl_s": self.avatar_cache_ttl_s,
            "rest_rate_burst": self.rest_rate_burst,
            "ws_rate_burst": self.ws_rate_burst,
            "day_cost_alert_usd": self.day_cost_alert_usd,
        }
        for field_name, value in numbers.items():
            if value < 0:
                raise ValueError(f"tier {self.name}: {field_name} must be >= 0, got {value}")
        if not (self.rest_rate_per_s > 0 and self.ws_rate_per_s > 0):
            raise ValueError(f"tier {self.name}: rates must be positive")


FREE: Final = Tier(name="free")
PREMIUM: Final = Tier(
    name="premium",
    llm_budget=DailyBudget(calls=300, tokens=1_000_000, cost_usd=0.50),
    llm_caps=TriggerCaps(per_hour=12, per_day=96, situation_after_ms=HOUR_MS // 4),
    debounce_ms=1_000,
    avatar_generations_per_day=48,
    avatar_cache_ttl_s=7 * DAY_S,
    rest_rate_per_s=10.0,
    rest_rate_burst=60,
    ws_rate_per_s=40.0,
    ws_rate_burst=120,
    day_cost_alert_usd=1.00,
)


class Tiers(Mapping[str, Tier]):
    """The tier table: tiers by name, one of them the default (``free``)."""

    __slots__ = ("_tiers", "default")

    def __init__(self, tiers: Mapping[str, Tier], default: str = DEFAULT_TIER) -> None:
        """Raises :class:`ValueError` when a key differs from its tier's name, the default
        is missing or there are more than :data:`MAX_TIERS` tiers."""
        if not 0 < len(tiers) <= MAX_TIERS:
            raise ValueError(f"between 1 and {MAX_TIERS} tiers, got {len(tiers)}")
        for name, tier in tiers.items():
            if name != tier.name:
                raise ValueError(f"tier {name!r} is named {tier.name!r}")
        if default not in tiers:
            raise ValueError(f"the default tier {default!r} is not defined")
        self._tiers = dict(tiers)
        self.default = tiers[default]

    def __getitem__(self, name: str) -> Tier:
        return self._tiers[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tiers)

    def __len__(self) -> int:
        return len(self._tiers)

    def of(self, name: str) -> Tier:
        """The tier named ``name``, or the default tier for a name not (or no longer) known."""
        return self._tiers.get(name, self.default)

    def tier_of(self, profile: Profile) -> Tier:
        """The tier of the user with ``profile``."""
        return self.of(profile.tier)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The table as JSON-ready data (the shape :func:`parse_tiers` reads)."""
        return {name: tier_to_dict(tier) for name, tier in self._tiers.items()}


DEFAULT_TIERS: Final = Tiers({"free": FREE, "premium": PREMIUM})


def tier_of(profile: Profile, tiers: Tiers = DEFAULT_TIERS) -> Tier:
    """The tier of the user with ``profile`` in ``tiers`` (the default tier when unknown)."""
    return tiers.tier_of(profile)


_NESTED: Final[dict[str, type[DailyBudget] | type[TriggerCaps]]] = {
    "llm_budget": DailyBudget,
    "llm_caps": TriggerCaps,
}


def tier_to_dict(tier: Tier) -> dict[str, Any]:
    """One tier's limits as JSON-ready data (nested budget and caps as objects; the name
    is the key of the table)."""
    data: dict[str, Any] = {}
    for f in fields(tier):
        if f.name == "name":
            continue
        value = getattr(tier, f.name)
        if f.name in _NESTED:
            value = {g.name: getattr(value, g.name) for g in fields(value)}
        data[f.name] = value
    return data


def _tier_from(name: str, base: Tier, data: Any) -> Tier:
    if not isinstance(data, dict):
        raise ValueError(f"tier {name!r}: must be an object of limits")
    known = {f.name for f in fields(Tier)} - {"name"}
    changes: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            raise ValueError(f"tier {name!r}: unknown limit {key!r}")
        if key in _NESTED:
            if not isinstance(value, dict):
                raise ValueError(f"tier {name!r}: {key} must be an object")
            try:
                changes[key] = replace(getattr(base, key), **value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"tier {name!r}: {key}: {exc}") from None
        elif isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"tier {name!r}: {key} must be a number")
        else:
            changes[key] = value
    return replace(base, name=name, **changes)


def parse_tiers(text: str) -> Tiers:
    """The tier table in ``text``: a JSON object ``{name: {limit: value, ...}}``.

    Each tier starts from the built-in tier of the same name (else ``free``), so a setting
    names only what it changes; ``free`` and ``premium`` are always defined. Raises
    :class:`ValueError` naming the tier and the limit that is wrong.
    """
    if not text.strip():
        return DEFAULT_TIERS
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise ValueError("must be a JSON object of tiers")
    table = dict(DEFAULT_TIERS.items())
    for name, limits in data.items():
        if not NAME_PATTERN.fullmatch(name):
            raise ValueError(f"a tier name must match {NAME_PATTERN.pattern}, got {name[:40]!r}")
        table[name] = _tier_from(name, DEFAULT_TIERS.get(name, FREE), limits)
    return Tiers(table)
