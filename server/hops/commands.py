"""The actions of an assessment as commands: ids, parameters and expiry, without I/O.

An assessment's ``actions`` (``breathing_session``, ``downgrade_workout``, …) are strings in
the state. A commit that changes them issues one command per action: its id is a hash of
(user, version, action), so whoever derives it (the node that committed, a node re-sending it
on ``hello``, a retry) gets the same id, and a device's answer lands on one record. Parameters
and lifetime come from :data:`KINDS`; an action this table does not know still becomes a
command, with no parameters and the default lifetime.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from server.store.base import CommandRecord

DEFAULT_TTL_S: Final = 30 * 60


@dataclass(frozen=True, slots=True)
class CommandKind:
    """What a device needs to carry out one kind of action, and how long it stays useful."""

    ttl_s: int = DEFAULT_TTL_S
    params: Mapping[str, Any] = field(default_factory=dict)


KINDS: Final[Mapping[str, CommandKind]] = {
    "breathing_session": CommandKind(15 * 60, {"minutes": 3, "pattern": "4-7-8"}),
    "schedule_breathing_session": CommandKind(2 * 3600, {"minutes": 5, "in_minutes": 60}),
    "downgrade_workout": CommandKind(60 * 60, {"intensity": "light", "max_hr_pct": 70}),
    "hydrate": CommandKind(30 * 60, {"ml": 250}),
    "rest": CommandKind(60 * 60, {"minutes": 20}),
    "move": CommandKind(30 * 60, {"steps": 500}),
    "wind_down": CommandKind(2 * 3600, {"minutes": 30}),
    "keep_going": CommandKind(10 * 60, {}),
}
"""Parameters and lifetime of each known action."""

LONGEST_TTL_MS: Final = max(DEFAULT_TTL_S, *(kind.ttl_s for kind in KINDS.values())) * 1000
"""No command lives longer: a user whose last commit is older has none pending."""


def command_id(user_id: str, version: int, action: str) -> str:
    """The id of ``action`` issued at ``version`` of ``user_id``'s state: 20 hex digits of
    sha256, the same on every node and every retry."""
    digest = hashlib.sha256(f"{user_id}\x00{version}\x00{action}".encode()).hexdigest()
    return f"c{digest[:20]}"


def issue(
    user_id: str, version: int, actions: Sequence[str], issued_at: int
) -> tuple[CommandRecord, ...]:
    """The commands of ``actions`` committed as ``version`` at ``issued_at`` (epoch ms); a
    repeated action is one command."""
    commands: list[CommandRecord] = []
    for action in dict.fromkeys(actions):
        kind = KINDS.get(action, CommandKind())
        commands.append(
            CommandRecord(
                user_id,
                command_id(user_id, version, action),
                action,
                dict(kind.params),
                version,
                issued_at,
                issued_at + kind.ttl_s * 1000,
            )
        )
    return tuple(commands)


def to_wire(command: CommandRecord) -> dict[str, Any]:
    """A command as a device receives it (and as the routes list it)."""
    wire: dict[str, Any] = {
        "id": command.command_id,
        "kind": command.kind,
        "params": dict(command.params),
        "version": command.version,
        "issued_at": command.issued_at,
        "expires_at": command.expires_at,
        "outcome": command.outcome,
    }
    if command.outcome_at is not None:
        wire["outcome_at"] = command.outcome_at
    if command.device is not None:
        wire["device"] = command.device
    return wire
