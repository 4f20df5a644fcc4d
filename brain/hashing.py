"""The state hash: a short, stable fingerprint of what a device shows.

The hash covers exactly the fields a device renders (:data:`brain.model.VISIBLE_FIELDS`), serialised
canonically (sorted keys, no whitespace), so two nodes that commit the same visible state
compute the same hash, and the hash doubles as the HTTP ``ETag`` of the state.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import orjson

from brain.model import VISIBLE_FIELDS

__all__ = ["HASH_LENGTH", "VISIBLE_FIELDS", "state_hash"]


HASH_LENGTH = 16
"""Hex characters kept of the sha256 (64 bits): plenty to tell states apart, small on the wire."""


def state_hash(visible: Mapping[str, object]) -> str:
    """The hex fingerprint of the visible fields of ``visible`` (other keys are ignored).

    Missing visible fields count as ``None``; tuples and lists hash alike.
    """
    canonical = {name: visible.get(name) for name in VISIBLE_FIELDS}
    encoded = orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(encoded).hexdigest()[:HASH_LENGTH]
