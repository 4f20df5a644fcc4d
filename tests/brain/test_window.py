"""The sliding window and the registry of windows: order, duplicates, eviction, bounds, cold."""

from __future__ import annotations

import pytest

from brain.model import Frame
from brain.window import Window, Windows

MIN = 60_000
T0 = 1_700_000_000_000


def frames(*minutes: float, device: str = "watch-1") -> list[Frame]:
    return [Frame(ts=T0 + int(m * MIN), hr=60 + m, device=device) for m in minutes]


def ts_minutes(window: Window) -> list[float]:
    return [(f.ts - T0) / MIN for f in window.frames]


def test_frames_arriving_out_of_order_are_kept_sorted_by_time() -> None:
    window = Window()
    window.add(frames(5, 1, 3), now_ms=T0 + 6 * MIN)
    window.add(frames(2, 6, 4), now_ms=T0 + 6 * MIN)
    assert ts_minutes(window) == [1, 2, 3, 4, 5, 6]


def test_a_resent_frame_is_ignored_and_not_counted() -> None:
    window = Window()
    assert window.add(frames(1, 2), now_ms=T0 + 3 * MIN) == 2
    assert window.add(frames(2, 1, 3), now_ms=T0 + 3 * MIN) == 1
    assert ts_minutes(window) == [1, 2, 3]


def test_frames_of_two_devices_at_the_same_time_are_both_kept() -> None:
    window = Window()
    window.add(frames(1, device="watch-1") + frames(1, device="ring"), now_ms=T0 + 2 * MIN)
    assert sorted(f.device for f in window.frames) == ["ring", "watch-1"]


def test_frames_older_than_the_span_are_evicted_as_time_moves_on() -> None:
    window = Window(span_ms=15 * MIN)
    window.add(frames(0, 5, 10, 15), now_ms=T0 + 15 * MIN)
    assert window.evict(now_ms=T0 + 21 * MIN) == 2
    assert ts_minutes(window) == [10, 15]


def test_a_late_frame_older_than_the_span_is_not_added() -> None:
    window = Window(span_ms=15 * MIN)
    assert window.add(frames(2), now_ms=T0 + 20 * MIN) == 0
    assert len(window) == 0


def test_the_window_holds_at_most_max_frames_dropping_the_oldest() -> None:
    window = Window(max_frames=3)
    window.add(frames(1, 2, 3, 4, 5), now_ms=T0 + 5 * MIN)
    assert ts_minutes(window) == [3, 4, 5]


def test_since_returns_the_frames_from_a_time_on() -> None:
    window = Window()
    window.add(frames(1, 2, 3, 4), now_ms=T0 + 4 * MIN)
    assert [(f.ts - T0) / MIN for f in window.since(T0 + 3 * MIN)] == [3, 4]
    assert window.latest_ts == T0 + 4 * MIN


def test_a_new_window_is_cold_until_refilled_from_the_store() -> None:
    window = Window()
    window.add(frames(10), now_ms=T0 + 10 * MIN)
    assert window.is_cold()
    added = window.refill(frames(1, 5, 10), now_ms=T0 + 10 * MIN)
    assert added == 2
    assert not window.is_cold()
    assert ts_minutes(window) == [1, 5, 10]
    window.mark_cold()
    assert window.is_cold()


@pytest.mark.parametrize(("span_ms", "max_frames"), [(0, 10), (MIN, 0)])
def test_a_window_with_a_non_positive_bound_is_refused(span_ms: int, max_frames: int) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        Window(span_ms=span_ms, max_frames=max_frames)


def test_the_registry_creates_windows_on_first_use_and_reports_them_cold() -> None:
    windows = Windows()
    assert windows.is_cold("ana")  # absent counts as cold: the store has to be read
    assert windows.add("ana", frames(1, 2), now_ms=T0 + 2 * MIN) == 2
    assert "ana" in windows
    assert windows.is_cold("ana")
    windows.window("ana", now_ms=T0 + 2 * MIN).refill([], now_ms=T0 + 2 * MIN)
    assert not windows.is_cold("ana")


def test_the_registry_forgets_the_least_recently_used_user_past_its_bound() -> None:
    windows = Windows(max_users=2)
    windows.add("ana", frames(1), now_ms=T0 + 1 * MIN)
    windows.add("ben", frames(1), now_ms=T0 + 2 * MIN)
    windows.get("ana", now_ms=T0 + 3 * MIN)  # ana is now the most recently used
    windows.add("cy", frames(1), now_ms=T0 + 4 * MIN)
    assert windows.users() == ["ana", "cy"]
    assert windows.is_cold("ben")


def test_idle_users_are_evicted_and_returned_idlest_first() -> None:
    windows = Windows()
    windows.add("ana", frames(1), now_ms=T0 + 1 * MIN)
    windows.add("ben", frames(2), now_ms=T0 + 2 * MIN)
    windows.add("cy", frames(9), now_ms=T0 + 9 * MIN)
    assert windows.evict_idle(now_ms=T0 + 10 * MIN, idle_ms=5 * MIN) == ["ana", "ben"]
    assert windows.users() == ["cy"]


def test_forget_drops_a_users_window() -> None:
    windows = Windows()
    windows.add("ana", frames(1), now_ms=T0 + MIN)
    assert windows.forget("ana")
    assert not windows.forget("ana")
    assert len(windows) == 0
