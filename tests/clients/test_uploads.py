"""When the bridge sends what it holds (clients/bridge/uploads.py): pure, no loop."""

from __future__ import annotations

from typing import Any

import pytest

from clients.bridge.uploads import LIVE, Outgoing, UploadPolicy

MINUTE = 1_700_000_040_000  # a minute's start
assert MINUTE % 60_000 == 0


def frame(second: int, hr: float = 70.0, **more: Any) -> dict[str, Any]:
    return {"ts": MINUTE + second * 1000, "hr": hr, "device": "w", **more}


class Held:
    """An Outgoing over an in-memory journal of frames by id."""

    def __init__(self, policy: UploadPolicy) -> None:
        self.frames: dict[int, dict[str, Any]] = {}
        self.out = Outgoing(policy, self.frames.get)
        self.next_id = 1

    def add(self, *frames: dict[str, Any], at: float = 0.0) -> list[int]:
        ids = []
        for f in frames:
            self.frames[self.next_id] = f
            self.out.add(self.next_id, f, at)
            ids.append(self.next_id)
            self.next_id += 1
        return ids

    def take(self, now: float, max_frames: int = 500) -> list[int]:
        return [i for i, _ in self.out.take(max_frames, now)]


def test_a_minute_goes_in_one_batch_once_a_frame_of_the_next_minute_arrives() -> None:
    held = Held(UploadPolicy())
    first = held.add(*(frame(s) for s in range(60)), at=0.0)
    assert held.take(now=59.0) == []  # the minute is not over, the linger not past
    later = held.add(frame(60), at=60.0)
    assert held.take(now=60.0) == first
    assert held.take(now=60.0) == []  # the new minute waits for its own end
    assert len(held.out) == 1 and held.out.deadline() == 60.0 + UploadPolicy().linger_s
    assert held.take(now=60.0 + UploadPolicy().linger_s) == later


def test_a_held_frame_goes_when_its_linger_has_passed() -> None:
    held = Held(UploadPolicy(linger_s=5.0))
    ids = held.add(frame(0), frame(1), at=100.0)
    assert held.out.deadline() == 105.0
    assert held.take(now=104.9) == []
    assert held.take(now=105.0) == ids


def test_a_heart_rate_spike_or_an_spo2_drop_goes_at_once() -> None:
    held = Held(UploadPolicy())
    held.add(frame(0, hr=70), frame(1, hr=72))
    held.add(frame(60, hr=71), at=1.0)  # the first minute is whole
    assert held.take(now=1.0) == [1, 2]
    held.add(frame(61, hr=80), at=2.0)
    assert held.take(now=2.0) == []  # 9 bpm from the last frame sent: waits
    held.add(frame(62, hr=97), at=3.0)  # 25 bpm from the last frame sent (72)
    assert held.take(now=3.0) == [3, 4, 5] and held.out.spikes == 1
    held.add(frame(63, hr=97, spo2=95.0), at=4.0)
    held.add(frame(64, hr=97, spo2=88.0), at=5.0)
    assert held.take(now=5.0) == [6, 7] and held.out.spikes == 2
    held.add(frame(65, hr=97, spo2=87.0), at=6.0)  # still low: not a new drop
    assert held.take(now=6.0) == []


def test_flush_sends_everything_held_one_minute_per_batch() -> None:
    held = Held(UploadPolicy())
    held.add(*(frame(s) for s in range(58, 62)), at=0.0)
    held.out.flush()
    assert held.take(now=0.0) == [1, 2]
    assert held.take(now=0.0) == [3, 4]
    assert held.take(now=0.0) == []


def test_a_batch_is_cut_at_max_frames() -> None:
    held = Held(UploadPolicy())
    held.add(*(frame(s) for s in range(25)), at=0.0)
    assert held.take(now=0.0, max_frames=10) == list(range(1, 11))
    assert held.take(now=0.0, max_frames=10) == list(range(11, 21))
    assert held.take(now=0.0, max_frames=10) == []  # 5 held, their minute not over


def test_after_a_reconnect_frames_sent_before_are_due_and_the_others_keep_waiting() -> None:
    held = Held(UploadPolicy())
    sent = held.add(*(frame(s) for s in range(60)), frame(60), at=0.0)
    assert held.take(now=0.0) == sent[:60]  # in flight when the connection dies
    waiting = held.add(frame(61), at=1.0)
    held.out.restart([*sent, *waiting])  # nothing was acked
    assert held.take(now=1.0) == sent[:60]
    assert held.take(now=1.0) == []  # frames 60 and 61 were never sent: their minute waits


def test_frames_journaled_by_an_earlier_run_are_due_at_once() -> None:
    held = Held(UploadPolicy())
    held.frames.update({1: frame(0), 2: frame(1)})  # replayed from the journal
    held.next_id = 3
    held.out.restart([1, 2])
    assert held.take(now=0.0) == [1, 2]


def test_put_back_frames_go_first_and_at_once() -> None:
    held = Held(UploadPolicy())
    held.add(*(frame(s) for s in range(61)), at=0.0)
    batch = held.take(now=0.0)
    held.out.put_back(batch[30:])  # e.g. the server could not store them
    assert held.take(now=0.0) == batch[30:]


def test_acked_frames_are_skipped() -> None:
    held = Held(UploadPolicy(linger_s=1.0))
    held.add(frame(0), frame(1), at=0.0)
    del held.frames[1]  # acked (a resend's earlier copy)
    assert held.take(now=1.0) == [2]
    assert held.out.deadline() is None


def test_live_sends_every_frame_at_once() -> None:
    held = Held(LIVE)
    held.add(frame(0), at=0.0)
    assert held.take(now=0.0) == [1]


def test_a_negative_linger_is_refused() -> None:
    with pytest.raises(ValueError, match="linger_s"):
        UploadPolicy(linger_s=-1)
