"""What a phone knows of its user's state: the last snapshot plus the deltas on top of it.

Pure (no I/O): :class:`PhoneState` applies ``snapshot`` and ``delta`` messages as the wire
protocol defines them. A delta applies only on the version it was made for (its ``base``);
one for an older version is stale and ignored, one for a newer base means a delta was
missed, and the phone must ask for a snapshot (``hello`` with ``since`` = its version).
The state can be saved and loaded as JSON, so a restarted bridge says ``since`` and costs
nothing when nothing changed.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from server.protocol import SNAPSHOT_FIELDS


class Applied(enum.Enum):
    """What became of a delta."""

    APPLIED = "applied"
    STALE = "stale"
    """Older than what the phone has (a late duplicate): ignored."""
    GAP = "gap"
    """Made for a version the phone does not have: ask for a snapshot."""


@dataclass(slots=True)
class PhoneState:
    """The user's state as last heard from the server; ``version`` ``None`` until then."""

    version: int | None = None
    state_hash: str = ""
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def known(self) -> bool:
        return self.version is not None

    def apply_snapshot(self, message: Mapping[str, Any]) -> bool:
        """Take a ``snapshot`` message whole; return whether what a device shows changed.

        Raises :class:`KeyError` or :class:`ValueError` for a message without a version.
        """
        changed = bool(message["state_hash"] != self.state_hash)
        self.version = int(message["version"])
        self.state_hash = str(message["state_hash"])
        self.fields = {
            name: message.get(name)
            for name in SNAPSHOT_FIELDS
            if name not in ("version", "state_hash")
        }
        return changed

    def apply_delta(self, message: Mapping[str, Any]) -> Applied:
        """Apply a ``delta`` message if it was made for this version.

        Raises :class:`KeyError` or :class:`ValueError` for a message without versions.
        """
        version = int(message["version"])
        base = int(message.get("base", version - 1))
        if self.version is not None and version <= self.version:
            return Applied.STALE
        if self.version is None or base != self.version:
            return Applied.GAP
        self.version = version
        self.state_hash = str(message["state_hash"])
        self.fields.update(message.get("changes") or {})
        if "t" in message:
            self.fields["updated_at"] = int(float(message["t"]))
        return Applied.APPLIED

    def view(self) -> dict[str, Any]:
        """Everything a device needs to show the state (what is relayed to the watch)."""
        return {**self.fields, "version": self.version, "state_hash": self.state_hash}

    def to_json(self) -> bytes:
        return orjson.dumps(self.view())

    @classmethod
    def from_json(cls, data: bytes) -> PhoneState:
        """A state saved by :meth:`to_json`. Raises :class:`ValueError` on malformed data."""
        try:
            raw = orjson.loads(data)
            version = raw.pop("version")
            state_hash = raw.pop("state_hash")
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError) as exc:
            raise ValueError(f"not a saved phone state: {exc}") from None
        if version is not None and not isinstance(version, int):
            raise ValueError(f"not a saved phone state: version {version!r}")
        return cls(version, str(state_hash), dict(raw))
