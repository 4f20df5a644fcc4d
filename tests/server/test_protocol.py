"""The wire codec, without an event loop: parsing, validation, encoders, Delta merging."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from brain.model import Env, Frame
from server import protocol as wire
from server.protocol import (
    MAX_FRAMES_PER_MESSAGE,
    MAX_MESSAGE_BYTES,
    Delta,
    FrameBatch,
    FrameLimits,
    Hello,
    Ping,
    ProtocolError,
    Rejection,
    Subscribe,
)

NOW = 1_750_000_000_000
LIMITS = FrameLimits()


def parse(message: dict[str, Any] | str, limits: FrameLimits = LIMITS) -> wire.ClientMessage:
    data = message if isinstance(message, str) else orjson.dumps(message).decode()
    return wire.parse_client_message(data, now_ms=NOW, limits=limits)


def frames_of(*frames: Any) -> FrameBatch:
    parsed = parse({"op": "frames", "seq": 1, "frames": list(frames)})
    assert isinstance(parsed, FrameBatch)
    return parsed


def only_rejection(frame: Any) -> Rejection:
    batch = frames_of(frame)
    assert batch.frames == ()
    assert len(batch.rejected) == 1
    return batch.rejected[0]


def test_valid_frame_with_every_field_parses() -> None:
    raw = {
        "ts": NOW,
        "hr": 72,
        "hrv": 45.5,
        "steps": 12,
        "spo2": 98,
        "skin_temp": 33.1,
        "resp_rate": 14,
        "device": "watch-1",
        "seq": 3,
        "env": {
            "altitude_m": 120,
            "temp_c": 21.5,
            "humidity_pct": 40,
            "speed_mps": 1.2,
            "weather": "clear",
        },
    }
    batch = frames_of(raw)
    assert batch.rejected == ()
    assert batch.frames == (
        Frame(
            ts=NOW,
            hr=72.0,
            hrv=45.5,
            steps=12,
            spo2=98.0,
            skin_temp=33.1,
            resp_rate=14.0,
            device="watch-1",
            seq=3,
            env=Env(
                altitude_m=120.0, temp_c=21.5, humidity_pct=40.0, speed_mps=1.2, weather="clear"
            ),
        ),
    )


def test_range_boundaries_are_inclusive() -> None:
    batch = frames_of({"ts": NOW, "hr": 20}, {"ts": NOW, "hr": 250})
    assert batch.rejected == ()
    assert [f.hr for f in batch.frames] == [20.0, 250.0]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("hr", 19.9),
        ("hr", 251),
        ("hrv", 0),
        ("hrv", 301),
        ("steps", -1),
        ("steps", 10_001),
        ("spo2", 49),
        ("spo2", 101),
        ("skin_temp", 19),
        ("skin_temp", 46),
        ("resp_rate", 2),
        ("resp_rate", 71),
    ],
)
def test_each_range_violation_reports_field_and_reason(field: str, value: float) -> None:
    rejection = only_rejection({"ts": NOW, field: value})
    assert rejection.index == 0
    assert rejection.field == field
    assert "outside" in rejection.reason
    assert f"{value:g}" in rejection.reason or str(value) in rejection.reason


@pytest.mark.parametrize(
    ("field", "value"),
    [("altitude_m", -501), ("temp_c", 71), ("humidity_pct", 101), ("speed_mps", -0.1)],
)
def test_env_range_violation_names_the_nested_field(field: str, value: float) -> None:
    rejection = only_rejection({"ts": NOW, "hr": 60, "env": {field: value}})
    assert rejection.field == f"env.{field}"
    assert "outside" in rejection.reason


def test_steps_must_be_whole() -> None:
    rejection = only_rejection({"ts": NOW, "steps": 1.5})
    assert (rejection.field, rejection.reason) == ("steps", "expected a whole number")


def test_unknown_frame_field_is_rejected() -> None:
    rejection = only_rejection({"ts": NOW, "hr": 60, "heart": 60})
    assert (rejection.field, rejection.reason) == ("heart", "unknown field")


def test_unknown_env_field_is_rejected() -> None:
    rejection = only_rejection({"ts": NOW, "hr": 60, "env": {"pressure": 1000}})
    assert (rejection.field, rejection.reason) == ("env.pressure", "unknown field")


@pytest.mark.parametrize("field", ["hr", "ts", "steps"])
def test_bool_is_not_a_number(field: str) -> None:
    frame: dict[str, Any] = {"ts": NOW, "hr": 60, field: True}
    rejection = only_rejection(frame)
    assert rejection.field == field
    assert rejection.reason == "expected a number, got bool"


def test_string_is_not_a_number() -> None:
    rejection = only_rejection({"ts": NOW, "hr": "60"})
    assert (rejection.field, rejection.reason) == ("hr", "expected a number, got str")


def test_missing_ts_is_required() -> None:
    assert only_rejection({"hr": 60}) == Rejection(0, "ts", "required")


def test_frame_without_measurement_is_rejected() -> None:
    rejection = only_rejection({"ts": NOW, "device": "w", "seq": 1})
    assert (rejection.field, rejection.reason) == ("frame", "carries no measurement")


def test_non_object_frame_is_rejected() -> None:
    assert only_rejection(5) == Rejection(0, "frame", "expected an object, got int")


def test_bad_device_name_is_rejected() -> None:
    rejection = only_rejection({"ts": NOW, "hr": 60, "device": "bad device!"})
    assert rejection.field == "device"


def test_timestamp_too_far_in_the_future() -> None:
    ok = frames_of({"ts": NOW + LIMITS.max_future_ms, "hr": 60})
    assert ok.rejected == ()
    rejection = only_rejection({"ts": NOW + LIMITS.max_future_ms + 1, "hr": 60})
    assert rejection.field == "ts"
    assert "in the future" in rejection.reason


def test_timestamp_too_far_in_the_past() -> None:
    ok = frames_of({"ts": NOW - LIMITS.max_age_ms, "hr": 60})
    assert ok.rejected == ()
    rejection = only_rejection({"ts": NOW - LIMITS.max_age_ms - 1, "hr": 60})
    assert rejection.field == "ts"
    assert "older than" in rejection.reason


def test_custom_limits_apply() -> None:
    limits = FrameLimits(max_future_ms=10, max_age_ms=1000)
    parsed = parse({"op": "frames", "seq": 1, "frames": [{"ts": NOW - 1001, "hr": 60}]}, limits)
    assert isinstance(parsed, FrameBatch)
    assert parsed.rejected[0].field == "ts"


def test_partial_batch_keeps_the_valid_frames() -> None:
    batch = frames_of(
        {"ts": NOW, "hr": 60},
        {"ts": NOW + 1, "hr": 999},
        {"ts": NOW + 2, "hr": 61},
        {"ts": NOW + 3, "spo2": True},
    )
    assert [f.ts for f in batch.frames] == [NOW, NOW + 2]
    assert [(r.index, r.field) for r in batch.rejected] == [(1, "hr"), (3, "spo2")]
    assert batch.seq == 1


def test_too_many_frames_is_a_protocol_error() -> None:
    frames = [{"ts": NOW, "hr": 60}] * (MAX_FRAMES_PER_MESSAGE + 1)
    with pytest.raises(ProtocolError) as err:
        parse({"op": "frames", "seq": 1, "frames": frames})
    assert err.value.code == "too_big"


def test_exactly_max_frames_is_fine() -> None:
    frames = [{"ts": NOW + i, "hr": 60} for i in range(MAX_FRAMES_PER_MESSAGE)]
    batch = frames_of(*frames)
    assert len(batch.frames) == MAX_FRAMES_PER_MESSAGE


def test_frames_must_be_a_list() -> None:
    with pytest.raises(ProtocolError) as err:
        parse({"op": "frames", "seq": 1, "frames": {"ts": NOW}})
    assert err.value.code == "bad_message"


@pytest.mark.parametrize("seq", [None, -1, "1", True])
def test_frames_seq_must_be_a_non_negative_integer(seq: Any) -> None:
    message: dict[str, Any] = {"op": "frames", "frames": []}
    if seq is not None:
        message["seq"] = seq
    with pytest.raises(ProtocolError) as err:
        parse(message)
    assert err.value.code == "bad_message"
    assert "seq" in err.value.message


@pytest.mark.parametrize("data", ["{not json", "", "[1, 2]", '"hello"', "42"])
def test_bad_json(data: str) -> None:
    with pytest.raises(ProtocolError) as err:
        parse(data)
    assert err.value.code == "bad_json"


def test_unknown_op() -> None:
    with pytest.raises(ProtocolError) as err:
        parse({"op": "dance"})
    assert err.value.code == "unknown_op"
    assert "dance" in err.value.message


def test_missing_op_is_a_bad_message() -> None:
    with pytest.raises(ProtocolError) as err:
        parse({"client": "x"})
    assert err.value.code == "bad_message"


def test_message_over_the_size_limit_is_too_big() -> None:
    data = '{"op":"ping","pad":"' + "x" * MAX_MESSAGE_BYTES + '"}'
    with pytest.raises(ProtocolError) as err:
        parse(data)
    assert err.value.code == "too_big"


def test_hello_parsing() -> None:
    assert parse({"op": "hello", "client": "phone/1.0"}) == Hello("phone/1.0", None)
    assert parse({"op": "hello", "client": "x", "since": 7}) == Hello("x", 7)
    assert parse({"op": "hello"}) == Hello("unknown", None)


@pytest.mark.parametrize(
    "message",
    [
        {"op": "hello", "client": 5},
        {"op": "hello", "client": "x" * 129},
        {"op": "hello", "since": -1},
        {"op": "hello", "since": "3"},
        {"op": "hello", "since": False},
    ],
)
def test_bad_hello(message: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError) as err:
        parse(message)
    assert err.value.code == "bad_message"


def test_ping_parsing() -> None:
    assert parse({"op": "ping", "t": 12.5}) == Ping(12.5)
    assert parse({"op": "ping"}) == Ping(0.0)
    with pytest.raises(ProtocolError) as err:
        parse({"op": "ping", "t": True})
    assert err.value.code == "bad_message"


def test_subscribe_parsing() -> None:
    assert parse({"op": "subscribe"}) == Subscribe(None)
    assert parse({"op": "subscribe", "user_id": "bob@x.io"}) == Subscribe("bob@x.io")
    for bad in ("", "has space", 5, "x" * 129):
        with pytest.raises(ProtocolError) as err:
            parse({"op": "subscribe", "user_id": bad})
        assert err.value.code == "bad_message"


def test_delta_encode_round_trips() -> None:
    delta = Delta("alice", 5, 4, "abcd", {"mood": "happy", "energy": 80}, 1234.5)
    decoded = wire.decode_server_message(delta.encode())
    assert decoded == {
        "op": "delta",
        "user_id": "alice",
        "version": 5,
        "base": 4,
        "state_hash": "abcd",
        "changes": {"mood": "happy", "energy": 80},
        "t": 1234.5,
    }
    assert wire.delta_from_message(decoded) == delta


def test_delta_from_message_defaults_base_and_rejects_garbage() -> None:
    message = {"op": "delta", "user_id": "a", "version": 3, "state_hash": "h", "changes": {}}
    message["t"] = 1.0
    assert wire.delta_from_message(message).base == 2
    with pytest.raises(ProtocolError):
        wire.delta_from_message({"op": "delta", "user_id": "a"})


def test_ack_pong_error_uptodate_encoders() -> None:
    ack = orjson.loads(wire.encode_ack(9, 2, [Rejection(1, "hr", "bad")]))
    assert ack == {
        "op": "ack",
        "seq": 9,
        "accepted": 2,
        "rejected": [{"index": 1, "field": "hr", "reason": "bad"}],
    }
    assert orjson.loads(wire.encode_pong(1.0, 2.0)) == {"op": "pong", "t": 1.0, "server_t": 2.0}
    assert orjson.loads(wire.encode_error("bad_json", "nope")) == {
        "op": "error",
        "code": "bad_json",
        "message": "nope",
    }
    assert orjson.loads(wire.encode_uptodate(3, "h")) == {
        "op": "uptodate",
        "version": 3,
        "state_hash": "h",
    }


def test_snapshot_encoder_keeps_exactly_the_snapshot_fields() -> None:
    state = {name: f"v-{name}" for name in wire.SNAPSHOT_FIELDS}
    state["extra"] = "dropped"
    decoded = orjson.loads(wire.encode_snapshot(state))
    assert decoded.pop("op") == "snapshot"
    assert decoded == {name: f"v-{name}" for name in wire.SNAPSHOT_FIELDS}


def test_frame_to_wire_round_trips_through_the_parser() -> None:
    frame = Frame(
        ts=NOW, hr=70.0, steps=3, device="w1", seq=2, env=Env(temp_c=20.0, weather="rain")
    )
    batch = frames_of(wire.frame_to_wire(frame))
    assert batch.frames == (frame,)


def test_decode_server_message_rejects_bad_input() -> None:
    with pytest.raises(ProtocolError) as err:
        wire.decode_server_message("nope")
    assert err.value.code == "bad_json"
    with pytest.raises(ProtocolError) as err:
        wire.decode_server_message('{"no_op": 1}')
    assert err.value.code == "bad_message"


def test_merged_after_spans_both_and_newer_wins() -> None:
    older = Delta("a", 5, 4, "h5", {"mood": "happy", "energy": 50}, 100.0)
    newer = Delta("a", 6, 5, "h6", {"energy": 60, "state": "calm"}, 200.0)
    merged = newer.merged_after(older)
    assert merged == Delta("a", 6, 4, "h6", {"mood": "happy", "energy": 60, "state": "calm"}, 200.0)
    # Neither input changes.
    assert older.changes == {"mood": "happy", "energy": 50}
    assert newer.base == 5


def test_summarize_keeps_the_newest_points() -> None:
    frames = [Frame(ts=NOW + i, hr=60.0 + i) for i in range(30)]
    summary = wire.summarize("a", list(reversed(frames)), max_points=5)
    assert summary.count == 30
    assert [p["ts"] for p in summary.points] == [NOW + i for i in range(25, 30)]
    assert orjson.loads(summary.encode())["op"] == "frames"
