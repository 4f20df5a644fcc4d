"""DynamoDB items of the store's records, and the records of items.

Items are the low-level client's typed attribute maps (``{"S": ...}``, ``{"N": ...}``):
one client for the store's lifetime, no resource layer. A frame's ``payload`` is the same
compact JSON the SQLite store keeps (:func:`server.store.codec.encode_frame`). Reading back
raises :class:`KeyError` or :class:`ValueError` on an item the store did not write.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeAlias

from brain.model import Frame
from server.store import codec
from server.store.base import AvatarCacheEntry, Usage, UserState

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb.type_defs import AttributeValueTypeDef

    Item: TypeAlias = dict[str, AttributeValueTypeDef]

ItemKey = tuple[str, str]
"""An item's key as plain strings: (partition key, sort key or "")."""


def frame_item(user_id: str, frame: Frame, retention_days: int) -> Item:
    """The ``frames`` item of one frame (``expires_at`` is DynamoDB's TTL attribute)."""
    return {
        "user_id": {"S": user_id},
        "sk": {"S": frame.key},
        "ts": {"N": str(frame.ts)},
        "expires_at": {"N": str(codec.expires_at(frame, retention_days))},
        "payload": {"S": codec.encode_frame(frame).decode()},
    }


def frame_of(item: dict[str, Any]) -> Frame:
    """The frame a ``frames`` item holds."""
    return codec.decode_frame(item["payload"]["S"])


def key_of(item: dict[str, Any], partition: str, sort: str | None) -> ItemKey:
    """The key of an item (or of a ``Key`` map) as plain strings."""
    return (item[partition]["S"], "" if sort is None else item[sort]["S"])


def state_item(state: UserState) -> Item:
    """The ``user_state`` item of a state; ``image_url`` is left out when ``None``."""
    data = codec.state_to_dict(state)
    item: Item = {
        "user_id": {"S": state.user_id},
        "version": {"N": str(state.version)},
        "state_hash": {"S": state.state_hash},
        "state": {"S": state.state},
        "mood": {"S": state.mood},
        "energy": {"N": str(state.energy)},
        "reasoning": {"S": state.reasoning},
        "actions": {"L": [{"S": action} for action in state.actions]},
        "source": {"S": state.source},
        "avatar_status": {"S": state.avatar_status},
        "profile": {"M": {name: {"S": value} for name, value in data["profile"].items()}},
        "updated_at": {"N": str(state.updated_at)},
        "epoch": {"N": str(state.epoch)},
    }
    if state.image_url is not None:
        item["image_url"] = {"S": state.image_url}
    return item


def state_of(item: dict[str, Any]) -> UserState:
    """The state a ``user_state`` item holds."""
    return codec.state_from_dict(
        {
            "user_id": item["user_id"]["S"],
            "version": int(item["version"]["N"]),
            "state_hash": item["state_hash"]["S"],
            "state": item["state"]["S"],
            "mood": item["mood"]["S"],
            "energy": int(item["energy"]["N"]),
            "reasoning": item["reasoning"]["S"],
            "actions": [value["S"] for value in item["actions"]["L"]],
            "source": item["source"]["S"],
            "image_url": item["image_url"]["S"] if "image_url" in item else None,
            "avatar_status": item["avatar_status"]["S"],
            "profile": {name: value["S"] for name, value in item["profile"]["M"].items()},
            "updated_at": int(item["updated_at"]["N"]),
            "epoch": int(item["epoch"]["N"]) if "epoch" in item else 0,
        }
    )


def epoch_of(item: dict[str, Any]) -> int:
    """The erase epoch of a ``user_state`` item (0 for an item written before epochs)."""
    return int(item["epoch"]["N"]) if "epoch" in item else 0


def is_tombstone(item: dict[str, Any]) -> bool:
    """Whether a ``user_state`` item is what an erase left (``erased`` is true)."""
    return bool(item.get("erased", {}).get("BOOL", False))


def avatar_item(entry: AvatarCacheEntry) -> Item:
    """The ``avatar_cache`` item of an entry; ``video_url`` is left out when ``None``."""
    item: Item = {
        "cache_hash": {"S": entry.cache_hash},
        "image_url": {"S": entry.image_url},
        "prompt": {"S": entry.prompt},
        "created_at": {"N": str(entry.created_at)},
    }
    if entry.video_url is not None:
        item["video_url"] = {"S": entry.video_url}
    return item


def avatar_of(item: dict[str, Any]) -> AvatarCacheEntry:
    """The entry an ``avatar_cache`` item holds."""
    return AvatarCacheEntry(
        cache_hash=item["cache_hash"]["S"],
        image_url=item["image_url"]["S"],
        prompt=item["prompt"]["S"],
        created_at=int(item["created_at"]["N"]),
        video_url=item["video_url"]["S"] if "video_url" in item else None,
    )


def cost_number(cost_usd: float) -> str:
    """A cost as a DynamoDB number: the float's shortest decimal, not its binary expansion.

    ``Decimal(0.1)`` would be ``0.1000000000000000055511151231257827021181583404541015625``
    (more digits than DynamoDB's 38 allow); ``repr`` gives ``0.1``.
    """
    return str(Decimal(repr(cost_usd)))


def usage_of(user_id: str, day: str, item: dict[str, Any]) -> Usage:
    """The usage an ``usage`` item (or an ``UpdateItem`` ALL_NEW answer) holds."""

    def number(name: str) -> Decimal:
        return Decimal(item[name]["N"]) if name in item else Decimal(0)

    return Usage(
        user_id=user_id,
        day=day,
        calls=int(number("calls")),
        input_tokens=int(number("input_tokens")),
        output_tokens=int(number("output_tokens")),
        cost_usd=float(number("cost_usd")),
    )
