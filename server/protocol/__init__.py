"""Wire protocol v1: parse client messages, validate frames, encode server messages.

Sans-I/O: this module turns text into typed messages and typed messages into text, and
knows nothing of sockets or event loops, so clients (which may import only this module
from the server) and the server share one codec, and it is tested without a loop.

Client → server: ``hello``, ``frames``, ``subscribe``, ``ping``, ``policy``, ``seen`` (what
a device has shown), ``command_result`` (a device's answer to a command).
Server → client: ``snapshot``, ``delta``, ``ack``, ``pong``, ``uptodate``, ``error``,
``policy`` (the delivery policy in force, the answer to a ``policy`` op), ``commands`` (the
commands of a user's actions), ``command_ack``, and ``frames`` (a summary of ingested
frames, for debug subscribers only).

A bad message raises :class:`ProtocolError` with a stable ``code``; a bad *frame* inside a
valid ``frames`` message does not: it is reported as a :class:`Rejection` (index, field,
reason) while the other frames of the batch are kept.

The package re-exports its modules, so that everyone imports from :mod:`server.protocol`:
:mod:`~server.protocol.codes` (error and close codes, reconnect rules, ``Retry-After``),
:mod:`~server.protocol.frames` (frame validation, wire form and JSON Schema),
:mod:`~server.protocol.client_messages` (what clients send, parsed) and
:mod:`~server.protocol.server_messages` (what the server sends, encoded).
"""

from __future__ import annotations

from typing import Final

from brain.model import SNAPSHOT_FIELDS as SNAPSHOT_FIELDS
from server.protocol.client_messages import (
    COMMAND_OUTCOMES as COMMAND_OUTCOMES,
    DEFAULT_SAVER_INTERVAL_S as DEFAULT_SAVER_INTERVAL_S,
    MAX_MESSAGE_BYTES as MAX_MESSAGE_BYTES,
    MAX_SAVER_INTERVAL_S as MAX_SAVER_INTERVAL_S,
    MAX_VERSION as MAX_VERSION,
    MIN_SAVER_INTERVAL_S as MIN_SAVER_INTERVAL_S,
    NORMAL_DELIVERY as NORMAL_DELIVERY,
    SEEN_KINDS as SEEN_KINDS,
    USER_ID_PATTERN as USER_ID_PATTERN,
    ClientMessage as ClientMessage,
    CommandResult as CommandResult,
    DeliveryPolicy as DeliveryPolicy,
    FrameBatch as FrameBatch,
    Hello as Hello,
    Ping as Ping,
    Power as Power,
    Seen as Seen,
    SetPolicy as SetPolicy,
    Subscribe as Subscribe,
    parse_client_message as parse_client_message,
    valid_user_id as valid_user_id,
)
from server.protocol.codes import (
    CLOSE_BAD_DATA as CLOSE_BAD_DATA,
    CLOSE_FORBIDDEN as CLOSE_FORBIDDEN,
    CLOSE_GOING_AWAY as CLOSE_GOING_AWAY,
    CLOSE_INTERNAL as CLOSE_INTERNAL,
    CLOSE_NORMAL as CLOSE_NORMAL,
    CLOSE_POLICY as CLOSE_POLICY,
    CLOSE_PROTOCOL_ERROR as CLOSE_PROTOCOL_ERROR,
    CLOSE_RESTART as CLOSE_RESTART,
    CLOSE_TOKEN_EXPIRED as CLOSE_TOKEN_EXPIRED,
    CLOSE_TOO_BIG as CLOSE_TOO_BIG,
    CLOSE_TRY_LATER as CLOSE_TRY_LATER,
    MAX_RETRY_AFTER_S as MAX_RETRY_AFTER_S,
    STOP_HTTP_STATUSES as STOP_HTTP_STATUSES,
    Disconnect as Disconnect,
    Disconnects as Disconnects,
    ErrorCode as ErrorCode,
    ProtocolError as ProtocolError,
    Reconnect as Reconnect,
    describe_close as describe_close,
    reconnect_after as reconnect_after,
    reconnect_after_refusal as reconnect_after_refusal,
    retry_after_s as retry_after_s,
)
from server.protocol.frames import (
    DEFAULT_MAX_AGE_MS as DEFAULT_MAX_AGE_MS,
    DEFAULT_MAX_FUTURE_MS as DEFAULT_MAX_FUTURE_MS,
    DEVICE_RE as DEVICE_RE,
    MAX_FRAMES_PER_MESSAGE as MAX_FRAMES_PER_MESSAGE,
    REJECTION_FIELDS as REJECTION_FIELDS,
    FrameLimits as FrameLimits,
    Rejection as Rejection,
    frame_json_schema as frame_json_schema,
    frame_to_wire as frame_to_wire,
    parse_frame as parse_frame,
    parse_frames as parse_frames,
)
from server.protocol.server_messages import (
    Delta as Delta,
    FramesSummary as FramesSummary,
    decode_server_message as decode_server_message,
    delta_from_message as delta_from_message,
    encode as encode,
    encode_ack as encode_ack,
    encode_command_ack as encode_command_ack,
    encode_commands as encode_commands,
    encode_error as encode_error,
    encode_pong as encode_pong,
    encode_snapshot as encode_snapshot,
    encode_uptodate as encode_uptodate,
    summarize as summarize,
    text_frame as text_frame,
)

VERSION: Final = 1
