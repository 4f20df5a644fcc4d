"""When the phone bridge sends the frames it holds: one upload per stored minute.

The server packs a device's frames into one item per minute (``docs/cost.md``), and
DynamoDB bills a write by the size of the whole item: an upload of one frame costs as much
as an upload of the whole minute. So the bridge does not send each frame as it comes; it
journals it at once (nothing is lost if the phone dies) and sends the frames of a minute
together, when

- a frame of a later minute arrives (the minute is complete: the normal case at 1 Hz);
- the first held frame has waited ``linger_s`` (the watch went quiet);
- a frame is a *spike*: the heart rate moved ``spike_hr_bpm`` or more from the last frame
  sent, or SpO2 fell below ``spike_spo2_below`` (the server should see it now);
- someone asks (:meth:`Outgoing.flush`: the app goes to the background, the source ended);
- ``max_frames`` are held (a fast device fills a message before its minute ends).

Frames the server did not ack before a disconnect (in flight, or refused as not stored) are
due at once; frames never sent keep waiting for their minute across a reconnect. Acks stay
per frame and only once durable: this module decides *when* frames go, not whether.

Pure: no I/O, time is passed in. :class:`UploadPolicy` is the rule, :class:`Outgoing` the
held frames.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

Frame = dict[str, Any]
"""A frame in wire form (``server.protocol.frame_to_wire``)."""

BUCKET_MS = 60_000
"""The server's storage bucket: a device's frames of one minute are one item."""


@dataclass(frozen=True, slots=True)
class UploadPolicy:
    """When held frames are sent. ``linger_s=0`` sends every frame at once (live)."""

    linger_s: float = 70.0
    """The longest a frame waits on the phone; a little over a minute, so a minute's last
    frame arriving late (BLE delivers in bursts) does not cut the minute in two."""
    bucket_ms: int = BUCKET_MS
    """Frames of one ``ts // bucket_ms`` go together (0: no alignment)."""
    spike_hr_bpm: float | None = 25.0
    """A heart rate this far from the last frame sent goes at once (``None``: never)."""
    spike_spo2_below: float | None = 90.0
    """SpO2 falling below this (from at or above it) goes at once (``None``: never)."""

    def __post_init__(self) -> None:
        if self.linger_s < 0 or self.bucket_ms < 0:
            raise ValueError(
                f"linger_s and bucket_ms must be >= 0, got {self.linger_s}, {self.bucket_ms}"
            )

    def bucket(self, frame: Frame) -> int:
        """The storage bucket of ``frame`` (all frames share one when not aligned)."""
        return int(frame["ts"]) // self.bucket_ms if self.bucket_ms else 0

    def is_spike(self, frame: Frame, reference: Frame | None) -> bool:
        """Whether ``frame`` differs enough from ``reference`` (the last frame sent) that
        the server should see it now."""
        if reference is None:
            return False
        hr, before = frame.get("hr"), reference.get("hr")
        if self.spike_hr_bpm is not None and hr is not None and before is not None:
            if abs(float(hr) - float(before)) >= self.spike_hr_bpm:
                return True
        spo2, spo2_before = frame.get("spo2"), reference.get("spo2")
        threshold = self.spike_spo2_below
        return (
            threshold is not None
            and spo2 is not None
            and float(spo2) < threshold
            and (spo2_before is None or float(spo2_before) >= threshold)
        )


LIVE = UploadPolicy(linger_s=0.0, bucket_ms=0, spike_hr_bpm=None, spike_spo2_below=None)
"""Every frame as soon as it is journaled (the demo's time-lapse, a test's stream)."""


class Outgoing:
    """The journaled frames not sent yet, in order, and which of them are due.

    ``frames_of(id)`` gives a held frame (the journal's copy; ``None`` once acked).
    """

    def __init__(self, policy: UploadPolicy, frames_of: Callable[[int], Frame | None]) -> None:
        self.policy = policy
        self._frames_of = frames_of
        self._ids: collections.deque[int] = collections.deque()
        self._arrived: dict[int, float] = {}
        self._due_through = -1
        """Every held id up to this one is due now (flushed, spiked, or sent before); ids
        are the journal's, from 0 up."""
        self._reference: Frame | None = None
        self.spikes = 0

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, frame_id: int, frame: Frame, now: float) -> None:
        """Hold ``frame`` (journaled as ``frame_id``), arrived at ``now``."""
        self._ids.append(frame_id)
        self._arrived[frame_id] = now
        if self.policy.is_spike(frame, self._reference):
            self.spikes += 1
            self._due_through = frame_id
        self._reference = frame if self._reference is None else self._reference

    def flush(self) -> None:
        """Make every held frame due now."""
        if self._ids:
            self._due_through = max(self._due_through, max(self._ids))

    def restart(self, pending: Iterable[int]) -> None:
        """After a reconnect: hold every ``pending`` id (the journal's, oldest first). Those
        sent before (or journaled by an earlier run) are due now; the others keep waiting."""
        self._ids = collections.deque(pending)
        seen_before = [i for i in self._ids if i not in self._arrived]
        if seen_before:
            self._due_through = max(self._due_through, max(seen_before))
        held = set(self._ids)
        self._arrived = {i: t for i, t in self._arrived.items() if i in held}

    def put_back(self, ids: Sequence[int]) -> None:
        """Hold ``ids`` again, first, due now (a batch that was not stored, or too big)."""
        self._ids.extendleft(reversed(ids))
        for i in ids:
            self._arrived.pop(i, None)
        if ids:
            self._due_through = max(self._due_through, max(ids))

    def deadline(self) -> float | None:
        """When the first held frame falls due by ``linger_s`` (``None``: nothing held)."""
        while self._ids and self._frames_of(self._ids[0]) is None:
            self._forget(self._ids.popleft())
        if not self._ids:
            return None
        arrived = self._arrived.get(self._ids[0])
        return -float("inf") if arrived is None else arrived + self.policy.linger_s

    def take(self, max_frames: int, now: float) -> list[tuple[int, Frame]]:
        """The next batch to send (one bucket's frames, at most ``max_frames``), removed
        from the held frames; ``[]`` when nothing is due."""
        deadline = self.deadline()
        if deadline is None:
            return []
        run: list[tuple[int, Frame]] = []
        complete = False
        bucket: int | None = None
        for frame_id in self._ids:
            frame = self._frames_of(frame_id)
            if frame is None:
                continue
            if bucket is None:
                bucket = self.policy.bucket(frame)
            elif self.policy.bucket(frame) != bucket:
                complete = True  # a frame of another minute: this one is whole
                break
            run.append((frame_id, frame))
            if len(run) >= max_frames:
                complete = True
                break
        due = complete or now >= deadline or run[0][0] <= self._due_through
        if not due:
            return []
        taken = {i for i, _ in run}
        while self._ids and (self._ids[0] in taken or self._frames_of(self._ids[0]) is None):
            self._forget(self._ids.popleft())
        self._reference = run[-1][1]
        return run

    def _forget(self, frame_id: int) -> None:
        self._arrived.pop(frame_id, None)
