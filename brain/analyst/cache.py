"""The answer cache: one LLM answer serves every request alike enough, for a while.

The key (:func:`cache_key`) is the sha256 of the rounded features (see
:func:`brain.features.rounded`), the persona and the model, so two windows that differ only
by sensor noise share an answer, while another coach persona or model never does.
:class:`ResponseCache` is a bounded LRU whose entries expire ``ttl_s`` after they were put,
on an injected clock.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable

import orjson

from brain.analyst.base import AnalysisRequest
from brain.analyst.persona import persona
from brain.features import rounded
from brain.model import Assessment


def cache_key(request: AnalysisRequest, model: str) -> str:
    """The hex sha256 of the request's rounded features, persona and ``model``."""
    canonical: dict[str, object] = {
        "features": rounded(request.features),
        "persona": persona(request.profile),
        "model": model,
    }
    return hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).hexdigest()


class ResponseCache:
    """At most ``max_entries`` assessments, each for ``ttl_s`` seconds of ``clock``.

    Raises :class:`ValueError` for a size below 1 or a non-positive TTL.
    """

    def __init__(
        self, *, clock: Callable[[], float], max_entries: int = 4096, ttl_s: float = 600.0
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive, got {ttl_s}")
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, Assessment]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> Assessment | None:
        """The fresh assessment under ``key`` (now most recently used), else ``None``."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, assessment = entry
        if self._clock() >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return assessment

    def put(self, key: str, assessment: Assessment) -> None:
        """Store ``assessment`` under ``key``, dropping the least recently used past the bound."""
        self._entries[key] = (self._clock() + self.ttl_s, assessment)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
