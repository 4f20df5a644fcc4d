"""What the server sends: ``snapshot``, ``delta``, ``ack``, ``pong``, ``uptodate``,
``error``, ``commands``, ``command_ack`` and debug ``frames`` summaries, encoded once (and a
delta framed once for every socket), and decoded again by clients. Clients reach it through
:mod:`server.protocol`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from brain.model import SNAPSHOT_FIELDS, Frame
from server.protocol.codes import ErrorCode, ProtocolError
from server.protocol.frames import Rejection


@dataclass(frozen=True, slots=True)
class Delta:
    """A change of one user's state: what changed on top of version ``base``.

    ``base`` is normally ``version - 1``; a coalesced delta (several changes merged in a slow
    client's outbox) spans more. A client whose version is not ``base`` asks for a snapshot.
    """

    user_id: str
    version: int
    base: int
    state_hash: str
    changes: Mapping[str, Any]
    t: float

    def merged_after(self, older: Delta) -> Delta:
        """This delta folded onto an older, not yet sent one of the same user."""
        return Delta(
            self.user_id,
            self.version,
            min(self.base, older.base),
            self.state_hash,
            {**older.changes, **self.changes},
            self.t,
        )

    def encode(self) -> str:
        return encode(
            {
                "op": "delta",
                "user_id": self.user_id,
                "version": self.version,
                "base": self.base,
                "state_hash": self.state_hash,
                "changes": self.changes,
                "t": self.t,
            }
        )


def encode(message: Mapping[str, Any]) -> str:
    """Encode a server message as JSON text."""
    return orjson.dumps(message).decode()


def text_frame(payload: bytes) -> bytes:
    """``payload`` (UTF-8 text) as one complete, unmasked WebSocket text frame (RFC 6455 5.2).

    Server-to-client frames carry no mask, so these bytes are the same for every socket: a
    message pushed to many clients is framed once. Not for connections that negotiated an
    extension (permessage-deflate is off on this server).
    """
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 1 << 16:
        return bytes((0x81, 126)) + size.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + size.to_bytes(8, "big") + payload


def decode_server_message(data: str | bytes) -> dict[str, Any]:
    """Decode a server message (for clients). Raises :class:`ProtocolError` on bad JSON."""
    try:
        message = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError("bad_json", f"not JSON: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise ProtocolError("bad_message", "expected a JSON object with an 'op'")
    return message


def delta_from_message(message: Mapping[str, Any]) -> Delta:
    """Rebuild a :class:`Delta` from its decoded JSON (as a broker or a client receives it)."""
    try:
        return Delta(
            str(message["user_id"]),
            int(message["version"]),
            int(message.get("base", int(message["version"]) - 1)),
            str(message["state_hash"]),
            dict(message["changes"]),
            float(message["t"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError("bad_message", f"not a delta: {exc!r}") from None


def encode_snapshot(state: Mapping[str, Any]) -> str:
    """A ``snapshot`` message from a mapping holding :data:`SNAPSHOT_FIELDS`."""
    return encode({"op": "snapshot", **{name: state[name] for name in SNAPSHOT_FIELDS}})


def encode_uptodate(version: int, state_hash: str) -> str:
    return encode({"op": "uptodate", "version": version, "state_hash": state_hash})


def encode_ack(seq: int, accepted: int, rejected: Sequence[Rejection]) -> str:
    return encode(
        {
            "op": "ack",
            "seq": seq,
            "accepted": accepted,
            "rejected": [
                {"index": r.index, "field": r.field, "reason": r.reason} for r in rejected
            ],
        }
    )


def encode_pong(t: float, server_t: float) -> str:
    return encode({"op": "pong", "t": t, "server_t": server_t})


def encode_commands(user_id: str, commands: Sequence[Mapping[str, Any]]) -> str:
    """A ``commands`` message: commands of ``user_id``'s actions, each ``{id, kind, params,
    version, issued_at, expires_at, outcome}`` (sent after the delta that issued them, and
    after ``hello`` while they are pending)."""
    return encode({"op": "commands", "user_id": user_id, "commands": list(commands)})


def encode_command_ack(command_id: str, outcome: str) -> str:
    """The answer to a ``command_result``: the outcome the server holds (the first one
    recorded, so a repeated or late answer learns what counts)."""
    return encode({"op": "command_ack", "id": command_id, "outcome": outcome})


def encode_error(code: ErrorCode, message: str) -> str:
    return encode({"op": "error", "code": code, "message": message})


@dataclass(frozen=True, slots=True)
class FramesSummary:
    """What debug subscribers see of ingested frames: count and the latest readings."""

    user_id: str
    count: int
    points: tuple[Mapping[str, float | int | None], ...] = field(default_factory=tuple)

    def encode(self) -> str:
        return encode(
            {"op": "frames", "user_id": self.user_id, "count": self.count, "points": self.points}
        )


def summarize(user_id: str, frames: Sequence[Frame], *, max_points: int = 20) -> FramesSummary:
    """The newest ``max_points`` frames reduced to ts, hr, hrv and steps, for live charts."""
    newest = sorted(frames, key=lambda f: f.ts)[-max_points:]
    points = tuple({"ts": f.ts, "hr": f.hr, "hrv": f.hrv, "steps": f.steps} for f in newest)
    return FramesSummary(user_id, len(frames), points)
