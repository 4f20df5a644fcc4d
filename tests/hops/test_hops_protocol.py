"""The ``seen`` and ``command_result`` ops in the codec and the pure session, and the
commands derived from actions: no loop, no socket."""

from __future__ import annotations

import orjson
import pytest

from server import protocol as wire
from server.auth import DeviceKind, Principal
from server.hops.commands import KINDS, command_id, issue
from server.hops.desk import CommandDesk
from server.protocol import Delta, ProtocolError
from server.push.session import RecordSeen, Reply, Session, SessionLimits, SettleCommand

NOW = 1_750_000_000.0
LIMITS = SessionLimits(rate_per_s=100.0, rate_burst=100, max_frame_age_ms=3600_000)
A_COMMAND = command_id("alice", 3, "breathing_session")


def session(device: DeviceKind = DeviceKind.PHONE) -> Session:
    return Session(Principal("alice", device, "jti", int(NOW) + 3600), LIMITS, NOW)


def parse(**fields: object) -> wire.ClientMessage:
    return wire.parse_client_message(orjson.dumps(fields), now_ms=int(NOW * 1000))


def test_seen_parses_device_version_and_kind() -> None:
    assert parse(op="seen", device="watch-1", version=4, kind="watch") == wire.Seen(
        "watch-1", 4, "watch"
    )
    assert parse(op="seen", device="phone", version=0) == wire.Seen("phone", 0, None)


@pytest.mark.parametrize(
    "fields",
    [
        {"device": "watch-1"},  # no version
        {"device": "watch-1", "version": -1},
        {"device": "watch-1", "version": "3"},
        {"device": "watch 1", "version": 3},  # a space is not a device name
        {"device": "x" * 65, "version": 3},
        {"version": 3},
        {"device": "watch-1", "version": 3, "kind": "toaster"},
    ],
)
def test_a_malformed_seen_is_a_bad_message(fields: dict[str, object]) -> None:
    with pytest.raises(ProtocolError) as err:
        parse(op="seen", **fields)
    assert err.value.code == "bad_message"


def test_command_result_parses_id_outcome_and_device() -> None:
    parsed = parse(op="command_result", id=A_COMMAND, outcome="done", device="watch-1")
    assert parsed == wire.CommandResult(A_COMMAND, "done", "watch-1")


@pytest.mark.parametrize(
    "fields",
    [
        {"id": A_COMMAND, "outcome": "maybe"},
        {"id": A_COMMAND, "outcome": "pending"},  # only the server's word
        {"id": "c" + "g" * 20, "outcome": "done"},
        {"id": "../../etc", "outcome": "done"},
        {"outcome": "done"},
        {"id": A_COMMAND, "outcome": "done", "device": ""},
    ],
)
def test_a_malformed_command_result_is_a_bad_message(fields: dict[str, object]) -> None:
    with pytest.raises(ProtocolError) as err:
        parse(op="command_result", **fields)
    assert err.value.code == "bad_message"


def test_the_session_hands_seen_and_results_to_the_connection() -> None:
    s = session()
    seen = s.on_message(
        orjson.dumps({"op": "seen", "device": "p", "version": 2}), text=True, now=NOW
    )
    assert seen == RecordSeen(wire.Seen("p", 2, None))
    assert s.seen_kind(wire.Seen("p", 2, None)) == "phone"
    result = {"op": "command_result", "id": A_COMMAND, "outcome": "dismissed"}
    settle = s.on_message(orjson.dumps(result), text=True, now=NOW)
    assert settle == SettleCommand(wire.CommandResult(A_COMMAND, "dismissed"))


def test_a_debug_page_must_say_which_kind_of_device_it_reports_for() -> None:
    s = session(DeviceKind.DEBUG)
    action = s.on_message(
        orjson.dumps({"op": "seen", "device": "p", "version": 2}), text=True, now=NOW
    )
    assert isinstance(action, Reply)
    assert orjson.loads(action.text)["code"] == "bad_message"
    named = {"op": "seen", "device": "w", "version": 2, "kind": "watch"}
    assert isinstance(s.on_message(orjson.dumps(named), text=True, now=NOW), RecordSeen)


def test_command_ids_are_deterministic_per_user_version_and_action() -> None:
    assert command_id("alice", 3, "rest") == command_id("alice", 3, "rest")
    others = {
        command_id("bob", 3, "rest"),
        command_id("alice", 4, "rest"),
        command_id("alice", 3, "move"),
    }
    assert command_id("alice", 3, "rest") not in others
    assert len(others) == 3


def test_issue_gives_kind_parameters_and_expiry_and_one_command_per_action() -> None:
    commands = issue("alice", 7, ["breathing_session", "breathing_session", "unheard_of"], 1000)
    assert [c.kind for c in commands] == ["breathing_session", "unheard_of"]
    breathing, unknown = commands
    assert breathing.params == KINDS["breathing_session"].params
    assert breathing.expires_at == 1000 + KINDS["breathing_session"].ttl_s * 1000
    assert unknown.params == {} and unknown.expires_at > 1000
    assert all(c.outcome == "pending" and c.version == 7 for c in commands)


def test_a_delta_that_changed_actions_is_followed_by_its_commands() -> None:
    delta = Delta("alice", 5, 4, "h", {"actions": ["rest", "hydrate"]}, 1_000.0)
    text = CommandDesk.commands_after(delta)
    assert text is not None
    message = orjson.loads(text)
    assert message["op"] == "commands"
    assert [c["id"] for c in message["commands"]] == [
        command_id("alice", 5, "rest"),
        command_id("alice", 5, "hydrate"),
    ]


def test_no_commands_follow_a_delta_without_actions_or_a_coalesced_one() -> None:
    assert CommandDesk.commands_after(Delta("alice", 5, 4, "h", {"mood": "happy"}, 1.0)) is None
    assert CommandDesk.commands_after(Delta("alice", 5, 4, "h", {"actions": []}, 1.0)) is None
    merged = Delta("alice", 6, 4, "h", {"actions": ["rest"]}, 1.0)
    assert CommandDesk.commands_after(merged) is None  # issued by v5: re-sent on hello
