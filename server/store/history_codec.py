"""History events as plain data and back, shared by both adapters and the REST route.

An event is stored as one compact JSON payload (the same in a SQLite row and a DynamoDB
item) beside the few attributes a query needs as keys or bounds (user, version, time,
expiry). :func:`event_to_dict` is also the event's wire shape in ``GET
/v1/users/{id}/history`` and in the GDPR export, so the three never drift apart. Everything
here is pure and raises :class:`ValueError` (or :class:`KeyError`) on data it cannot read.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from server.provenance import Provenance
from server.store.base import HistoryEvent

SECONDS_PER_DAY: Final = 86_400

EVENT_FIELDS: Final = (
    "version",
    "at",
    "cause",
    "source",
    "state",
    "mood",
    "energy",
    "reasoning",
    "actions",
    "image_url",
    "video_url",
    "changed",
    "model",
    "cost_usd",
    "features",
    "fallback",
)
"""The fields of an event's JSON shape, in order (the OpenAPI schema lists the same)."""


def event_to_dict(event: HistoryEvent) -> dict[str, Any]:
    """The event as JSON-ready data (without ``user_id``: the path or document names it)."""
    how = event.provenance
    return {
        "version": event.version,
        "at": event.at,
        "cause": event.cause,
        "source": event.source,
        "state": event.state,
        "mood": event.mood,
        "energy": event.energy,
        "reasoning": event.reasoning,
        "actions": list(event.actions),
        "image_url": event.image_url,
        "video_url": event.video_url,
        "changed": list(event.changed),
        "model": how.model,
        "cost_usd": how.cost_usd,
        "features": None if how.features is None else dict(how.features),
        "fallback": how.fallback,
    }


def event_from_dict(user_id: str, data: dict[str, Any]) -> HistoryEvent:
    """The event :func:`event_to_dict` made ``data`` from; raises :class:`KeyError` or
    :class:`ValueError` on data it did not make."""
    features = data.get("features")
    if features is not None and not isinstance(features, dict):
        raise ValueError("features of a history event must be an object")
    cost = data.get("cost_usd")
    return HistoryEvent(
        user_id=user_id,
        version=int(data["version"]),
        at=int(data["at"]),
        cause=str(data["cause"]),
        source=str(data["source"]),
        state=str(data["state"]),
        mood=str(data["mood"]),
        energy=int(data["energy"]),
        reasoning=str(data.get("reasoning", "")),
        actions=tuple(str(a) for a in data.get("actions") or ()),
        image_url=data.get("image_url"),
        video_url=data.get("video_url"),
        changed=tuple(str(c) for c in data.get("changed") or ()),
        provenance=Provenance(
            model=data.get("model"),
            cost_usd=None if cost is None else float(cost),
            features=features,
            fallback=data.get("fallback"),
        ),
    )


def encode_event(event: HistoryEvent) -> bytes:
    """The event's stored payload: compact JSON of :func:`event_to_dict`."""
    return orjson.dumps(event_to_dict(event))


def decode_event(user_id: str, payload: bytes | str) -> HistoryEvent:
    """The event stored as ``payload``; raises :class:`ValueError` on malformed JSON."""
    data = orjson.loads(payload)
    if not isinstance(data, dict):
        raise ValueError(f"a history payload must be a JSON object, not {type(data).__name__}")
    return event_from_dict(user_id, data)


def expires_at(event: HistoryEvent, retention_days: int) -> int:
    """Epoch second from which the event is no longer kept (DynamoDB's TTL attribute)."""
    return event.at // 1000 + retention_days * SECONDS_PER_DAY
