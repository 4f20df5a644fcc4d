"""A connection's bounded, coalescing outbox.

Deltas for one user coalesce: a delta that arrives while an older one for the same user is
still waiting replaces it, merged (the client gets one message that spans both versions;
see :meth:`server.protocol.Delta.merged_after`). Other messages queue in order. Pending
entries are bounded: :meth:`Outbox.put` returns ``False`` once the limit is reached, and
the owner closes the peer as too slow instead of buffering without end.

Messages are kept as already-encoded text, so a delta encoded once by the hub is the same
string object in every subscriber's outbox; only a merge encodes again.
"""

from __future__ import annotations

from collections import OrderedDict
from itertools import count

from server.protocol import Delta

_OTHER = count()


class Outbox:
    """Pending messages of one connection, newest state per user, at most ``limit``."""

    __slots__ = ("_deltas", "_items", "limit", "merged")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        # key -> text; deltas are keyed by ("d", user_id), others by a unique number.
        self._items: OrderedDict[object, str] = OrderedDict()
        self._deltas: dict[str, Delta] = {}
        self.merged = 0
        """How many deltas were folded into a pending one (a coalescing counter)."""

    def __len__(self) -> int:
        return len(self._items)

    def put(self, text: str) -> bool:
        """Queue a non-delta message. ``False`` if the outbox is full (nothing queued)."""
        if len(self._items) >= self.limit:
            return False
        self._items[next(_OTHER)] = text
        return True

    def put_delta(self, delta: Delta, text: str) -> bool:
        """Queue ``delta`` (already encoded as ``text``), merging with a pending one.

        ``False`` if the outbox is full and the delta could not be merged.
        """
        key = ("d", delta.user_id)
        older = self._deltas.get(delta.user_id)
        if older is not None:
            merged = delta.merged_after(older)
            self._deltas[delta.user_id] = merged
            # Keep the queue position of the older delta: its user has waited longest.
            self._items[key] = merged.encode()
            self.merged += 1
            return True
        if len(self._items) >= self.limit:
            return False
        self._deltas[delta.user_id] = delta
        self._items[key] = text
        return True

    def put_snapshot(self, user_id: str, version: int, text: str) -> bool:
        """Queue a snapshot of ``user_id`` at ``version``, superseding pending deltas.

        A pending delta that the snapshot already includes is dropped; a newer one is moved
        behind the snapshot, so the client never sees state go backwards. ``False`` if full.
        """
        newer = self._deltas.pop(user_id, None)
        if newer is not None:
            del self._items[("d", user_id)]
            if newer.version <= version:
                newer = None
        if not self.put(text):
            return False
        return newer is None or self.put_delta(newer, newer.encode())

    def pop(self) -> tuple[str, Delta | None] | None:
        """The oldest pending message and, for a delta, its parsed form; ``None`` if empty."""
        if not self._items:
            return None
        key, text = self._items.popitem(last=False)
        if isinstance(key, tuple):
            return text, self._deltas.pop(key[1])
        return text, None
