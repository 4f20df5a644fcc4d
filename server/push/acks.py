"""What a connection does with ``seen`` and ``command_result``, and the commands it re-sends.

The store and hub work of the acks-across-hops ops, for :class:`server.push.endpoint.Connection`
(whose :class:`~server.push.session.Session` decides, without I/O, that the work is due). Each
function returns the text to send, or ``None``. A store that fails answers ``unavailable``
(the client sends again later) and logs a warning naming the user, never the client's input.
"""

from __future__ import annotations

import logging

from server import protocol as wire
from server.errors import StoreError
from server.push.session import RecordSeen, Session, SettleCommand
from server.services import Services
from server.store.base import UserState

log = logging.getLogger(__name__)


async def carry_out(
    services: Services, session: Session, action: RecordSeen | SettleCommand
) -> str | None:
    """Do what ``action`` asks; the text to send, if any."""
    if isinstance(action, RecordSeen):
        return await record_seen(services, session, action.seen)
    return await settle_command(services, session, action.result)


async def record_seen(services: Services, session: Session, seen: wire.Seen) -> str | None:
    """Note what a device of the connection's user has shown; an ``error`` if the user has
    too many devices or the store failed, else nothing to send."""
    user_id = session.principal.user_id
    kind = session.seen_kind(seen)
    assert kind is not None  # the session answers a seen without a kind itself
    current = session.versions.get(user_id)
    try:
        recorded = await services.devices.record(
            user_id, seen.device, kind, seen.version, current=current
        )
    except StoreError as exc:
        log.warning("seen of a device of %s not stored: %s", user_id, type(exc).__name__)
        return wire.encode_error("unavailable", "seen not stored; send it again")
    if not recorded:
        return wire.encode_error("bad_message", "too many devices for this user")
    return None


async def settle_command(services: Services, session: Session, result: wire.CommandResult) -> str:
    """Record a device's answer to a command; the ``command_ack`` with the outcome the server
    holds (the first answer's), or an ``error``."""
    user_id = session.principal.user_id
    device = result.device or session.principal.device.value
    try:
        state = await services.state.current(user_id)
        settled = await services.commands.settle(user_id, result.id, result.outcome, device, state)
    except StoreError as exc:
        log.warning("command result of %s not stored: %s", user_id, type(exc).__name__)
        return wire.encode_error("unavailable", "result not stored; send it again")
    if settled is None:
        return session.unknown_command(result.id)
    return session.command_ack(settled.command_id, settled.outcome)


async def pending_commands(services: Services, state: UserState) -> str | None:
    """The ``commands`` message of the user's pending commands, sent after a ``hello``
    (``None``: none, or the store cannot say now; the next hello asks again)."""
    user_id = state.user_id
    try:
        return await services.commands.pending(user_id, state.updated_at)
    except StoreError as exc:
        log.warning("pending commands of %s not readable: %s", user_id, type(exc).__name__)
        return None
