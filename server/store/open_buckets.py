"""The bucket each device is writing now, as this node last stored it: writes need no read.

Without it, every write of a device's frames read its current bucket's parts back from the
store before adding to them. :class:`OpenBuckets` keeps, per (user, device), the parts of
the bucket written last (info, payload, chunk count, version): about a kilobyte a device.
A device moving on to the next minute replaces its entry (a closed minute is not kept), the
least recently written devices go first past ``capacity``, and an erase forgets the user.

Who may trust it: SQLite is the only writer of its file, so what it committed is what is
stored. On DynamoDB another node may have written the bucket since; the store's writes stay
conditional on the remembered version, and a failed condition makes it read the bucket
again (:mod:`server.store.dynamodb_frames`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

from server.store.frame_buckets import BucketId, StoredPart

OPEN_BUCKETS = 20_000
"""Devices remembered: about a kilobyte each at 1 Hz (20 MB), one per device streaming here."""

Parts = Mapping[int, StoredPart]
"""The parts of one bucket, by number."""


class OpenBuckets:
    """The stored parts of each device's latest bucket, least recently written out first."""

    def __init__(self, capacity: int = OPEN_BUCKETS) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity}")
        self._capacity = capacity
        self._known: OrderedDict[tuple[str, str], tuple[int, Parts]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._known)

    def get(self, bucket: BucketId) -> Parts | None:
        """The parts of ``bucket`` as last stored here, or ``None`` when not known (not
        written here lately, or the device has moved to another minute since)."""
        found = self._known.get((bucket.user_id, bucket.device))
        if found is None or found[0] != bucket.start_ms:
            return None
        return found[1]

    def put(self, bucket: BucketId, parts: Parts) -> None:
        """Remember ``parts`` as every stored part of ``bucket`` (the device's latest)."""
        key = (bucket.user_id, bucket.device)
        found = self._known.get(key)
        if found is not None and found[0] > bucket.start_ms:
            return  # a late frame's minute: keep the device's current one
        self._known[key] = (bucket.start_ms, dict(parts))
        self._known.move_to_end(key)
        while len(self._known) > self._capacity:
            self._known.popitem(last=False)

    def forget(self, bucket: BucketId) -> None:
        """Forget the device of ``bucket`` (what is stored is no longer known)."""
        self._known.pop((bucket.user_id, bucket.device), None)

    def forget_user(self, user_id: str) -> None:
        """Forget every device of ``user_id`` (after an erase)."""
        for key in [key for key in self._known if key[0] == user_id]:
            del self._known[key]

    def clear(self) -> None:
        """Forget everything (after parts were deleted outside the writes, e.g. a purge)."""
        self._known.clear()
