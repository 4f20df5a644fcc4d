"""The pure session of one connection, driven without an event loop or a socket."""

from __future__ import annotations

import orjson
import pytest

from server.auth import DeviceKind, Principal
from server.protocol import Delta, Disconnects, FrameBatch
from server.push.session import (
    MAX_ERRORS,
    MAX_FRAGMENTS,
    MAX_MESSAGE_S,
    Close,
    Join,
    Reply,
    Session,
    SessionLimits,
    Store,
)

NOW = 1_750_000_000.0
LIMITS = SessionLimits(rate_per_s=1.0, rate_burst=5, max_frame_age_ms=3600_000)


def session(device: DeviceKind = DeviceKind.PHONE, limits: SessionLimits = LIMITS) -> Session:
    return Session(Principal("alice", device, "jti", int(NOW) + 3600), limits, NOW)


def message(**fields: object) -> bytes:
    return orjson.dumps(fields)


def error_code(action: object) -> str:
    assert isinstance(action, Reply | Close)
    assert action.text is not None
    code: str = orjson.loads(action.text)["code"]
    return code


def test_every_frame_counts_toward_the_rate_limit_pings_and_continuations_too() -> None:
    s = session()
    assert s.on_frame(data=False, first=False, fin=True, now=NOW) is None  # ping
    assert s.on_frame(data=False, first=False, fin=True, now=NOW) is None  # pong
    assert s.on_frame(data=True, first=True, fin=False, now=NOW) is None  # text, part 1
    assert s.on_frame(data=True, first=False, fin=False, now=NOW) is None  # continuation
    assert s.on_frame(data=True, first=False, fin=True, now=NOW) is None  # continuation, last
    verdict = s.on_frame(data=False, first=False, fin=True, now=NOW)
    assert verdict is not None and verdict.disconnect is Disconnects.RATE_LIMIT
    assert error_code(verdict) == "rate_limited"


def test_the_rate_limit_refills_with_time() -> None:
    s = session()
    for _ in range(5):
        assert s.on_frame(data=False, first=False, fin=True, now=NOW) is None
    assert s.on_frame(data=False, first=False, fin=True, now=NOW + 1.0) is None
    assert s.on_frame(data=False, first=False, fin=True, now=NOW + 1.0) is not None


def test_a_message_in_too_many_fragments_is_closed_as_fragmented() -> None:
    s = session(limits=SessionLimits(1e9, 10**9, 3600_000))
    assert s.on_frame(data=True, first=True, fin=False, now=NOW) is None
    for _ in range(MAX_FRAGMENTS - 1):
        assert s.on_frame(data=True, first=False, fin=False, now=NOW) is None
    verdict = s.on_frame(data=True, first=False, fin=True, now=NOW)
    assert verdict == Close(Disconnects.FRAGMENTED)


def test_a_message_whose_fragments_take_too_long_is_closed_as_fragmented() -> None:
    s = session()
    assert s.on_frame(data=True, first=True, fin=False, now=NOW) is None
    assert s.message_deadline() == NOW + MAX_MESSAGE_S
    verdict = s.on_frame(data=True, first=False, fin=True, now=NOW + MAX_MESSAGE_S + 0.1)
    assert verdict == Close(Disconnects.FRAGMENTED)


def test_fragment_counts_start_again_with_each_message() -> None:
    s = session(limits=SessionLimits(1e9, 10**9, 3600_000))
    for _ in range(3):
        assert s.on_frame(data=True, first=True, fin=False, now=NOW) is None
        for _ in range(MAX_FRAGMENTS - 2):
            assert s.on_frame(data=True, first=False, fin=False, now=NOW) is None
        assert s.on_frame(data=True, first=False, fin=True, now=NOW) is None
        assert s.message_deadline() is None


def test_invalid_utf8_text_closes_with_1007_and_binary_is_parsed_as_json() -> None:
    s = session()
    bad = b'{"op":"ping","t":1,"x":"\xff"}'
    assert s.on_message(bad, text=True, now=NOW) == Close(Disconnects.BAD_UTF8)
    assert Disconnects.BAD_UTF8.code == 1007
    pong = s.on_message(message(op="ping", t=3), text=False, now=NOW)
    assert isinstance(pong, Reply)
    assert orjson.loads(pong.text) == {"op": "pong", "t": 3.0, "server_t": NOW * 1000}


def test_hello_joins_the_own_user_and_answers_a_snapshot_or_uptodate() -> None:
    s = session()
    action = s.on_message(message(op="hello", client="t", since=4), text=True, now=NOW)
    assert action == Join("alice", 4)
    assert s.subscriptions == {"alice"}
    fields = {
        "user_id": "alice",
        "version": 4,
        "state_hash": "h4",
        "state": "calm",
        "mood": "content",
        "energy": 70,
        "image_url": None,
        "avatar_status": "none",
        "video_url": None,
        "video_status": "none",
        "health": None,
        "reasoning": "",
        "actions": [],
        "source": "rules",
        "updated_at": 0,
    }
    assert orjson.loads(s.snapshot("alice", fields, 4))["op"] == "uptodate"
    assert orjson.loads(s.snapshot("alice", fields, 3))["op"] == "snapshot"
    assert s.versions == {"alice": 4}


def test_a_delta_the_client_has_from_a_snapshot_is_not_sent_again() -> None:
    s = session()
    s.versions["alice"] = 5
    old = Delta("alice", 5, 4, "h", {"mood": "happy"}, NOW)
    new = Delta("alice", 6, 5, "h", {"mood": "tired"}, NOW)
    assert not s.wants(old)
    assert s.wants(new)
    assert not s.wants(new)


def test_a_phone_subscribing_to_another_user_is_closed_as_forbidden() -> None:
    s = session()
    action = s.on_message(message(op="subscribe", user_id="bob"), text=True, now=NOW)
    assert isinstance(action, Close)
    assert action.disconnect is Disconnects.FORBIDDEN
    assert error_code(action) == "forbidden"
    service = session(DeviceKind.SERVICE)
    assert service.on_message(message(op="subscribe", user_id="bob"), text=True, now=NOW) == (
        Join("bob", None)
    )


def test_frames_are_stored_then_acked_or_answered_unavailable() -> None:
    s = session()
    ts = int(NOW * 1000) - 1000
    raw = message(op="frames", seq=9, frames=[{"ts": ts, "hr": 70}, {"ts": ts, "zz": 1}])
    action = s.on_message(raw, text=True, now=NOW)
    assert isinstance(action, Store)
    batch: FrameBatch = action.batch
    assert (batch.seq, len(batch.frames), [r.field for r in batch.rejected]) == (9, 1, ["zz"])
    ack = orjson.loads(s.stored(batch))
    assert (ack["op"], ack["seq"], ack["accepted"]) == ("ack", 9, 1)
    refused = orjson.loads(s.not_stored(batch))
    assert (refused["op"], refused["code"]) == ("error", "unavailable")


def test_a_store_outage_on_hello_answers_unavailable_not_a_close() -> None:
    answer = orjson.loads(session().unavailable("alice"))
    assert (answer["op"], answer["code"]) == ("error", "unavailable")


def test_protocol_errors_are_answered_until_too_many_then_closed() -> None:
    s = session()
    for _ in range(MAX_ERRORS):
        action = s.on_message(b"nope", text=True, now=NOW)
        assert isinstance(action, Reply)
        assert error_code(action) == "bad_json"
    action = s.on_message(b"nope", text=True, now=NOW)
    assert isinstance(action, Close)
    assert action.disconnect is Disconnects.PROTOCOL_ERRORS


@pytest.mark.parametrize("device", list(DeviceKind))
def test_only_debug_and_service_connections_want_frame_summaries(device: DeviceKind) -> None:
    assert session(device).wants_summaries is (device in (DeviceKind.DEBUG, DeviceKind.SERVICE))
