"""The bounded, coalescing outbox of a connection."""

from __future__ import annotations

import orjson

from server.protocol import Delta
from server.push.outbox import Outbox


def delta(user: str, version: int, **changes: object) -> Delta:
    return Delta(user, version, version - 1, f"h{version}", changes, float(version))


def drain(outbox: Outbox) -> list[tuple[str, Delta | None]]:
    items = []
    while (item := outbox.pop()) is not None:
        items.append(item)
    return items


def test_messages_come_out_in_order() -> None:
    outbox = Outbox(10)
    assert outbox.put("a")
    d = delta("u", 1, mood="happy")
    assert outbox.put_delta(d, d.encode())
    assert outbox.put("b")
    assert len(outbox) == 3
    assert drain(outbox) == [("a", None), (d.encode(), d), ("b", None)]
    assert outbox.pop() is None


def test_put_refuses_past_the_limit() -> None:
    outbox = Outbox(2)
    assert outbox.put("a")
    assert outbox.put("b")
    assert not outbox.put("c")
    d = delta("u", 1)
    assert not outbox.put_delta(d, d.encode())
    assert [text for text, _ in drain(outbox)] == ["a", "b"]


def test_deltas_of_one_user_coalesce_keeping_the_queue_position() -> None:
    outbox = Outbox(3)
    first = delta("u", 1, mood="happy", energy=10)
    outbox.put_delta(first, first.encode())
    outbox.put("middle")
    second = delta("u", 2, energy=20)
    third = delta("u", 3, state="calm")
    assert outbox.put_delta(second, second.encode())
    assert outbox.put_delta(third, third.encode())
    assert len(outbox) == 2
    assert outbox.merged == 2
    (text, merged), (other, none) = drain(outbox)
    assert merged == Delta("u", 3, 0, "h3", {"mood": "happy", "energy": 20, "state": "calm"}, 3.0)
    assert orjson.loads(text)["base"] == 0
    assert orjson.loads(text)["changes"] == {"mood": "happy", "energy": 20, "state": "calm"}
    assert (other, none) == ("middle", None)


def test_a_full_outbox_still_merges_a_pending_users_delta() -> None:
    outbox = Outbox(1)
    first = delta("u", 1, energy=1)
    assert outbox.put_delta(first, first.encode())
    second = delta("u", 2, energy=2)
    assert outbox.put_delta(second, second.encode())
    other = delta("v", 1)
    assert not outbox.put_delta(other, other.encode())


def test_deltas_of_different_users_do_not_merge() -> None:
    outbox = Outbox(5)
    a, b = delta("a", 1), delta("b", 1)
    outbox.put_delta(a, a.encode())
    outbox.put_delta(b, b.encode())
    assert [d for _, d in drain(outbox)] == [a, b]
    assert outbox.merged == 0


def test_the_encoded_text_is_passed_through_unchanged() -> None:
    outbox = Outbox(5)
    d = delta("u", 1)
    text = d.encode()
    outbox.put_delta(d, text)
    popped = outbox.pop()
    assert popped is not None
    assert popped[0] is text


def test_snapshot_drops_a_pending_delta_it_includes() -> None:
    outbox = Outbox(5)
    d = delta("u", 3)
    outbox.put_delta(d, d.encode())
    assert outbox.put_snapshot("u", 3, "snap")
    assert drain(outbox) == [("snap", None)]


def test_snapshot_moves_a_newer_delta_behind_it() -> None:
    outbox = Outbox(5)
    d = delta("u", 4)
    outbox.put_delta(d, d.encode())
    assert outbox.put_snapshot("u", 3, "snap")
    items = drain(outbox)
    assert [text for text, _ in items] == ["snap", d.encode()]
    assert items[1][1] == d


def test_snapshot_refused_when_full() -> None:
    outbox = Outbox(1)
    outbox.put("x")
    assert not outbox.put_snapshot("u", 1, "snap")
