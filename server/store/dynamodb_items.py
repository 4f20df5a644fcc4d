"""DynamoDB items of the store's records, and the records of items.

Items are the low-level client's typed attribute maps (``{"S": ...}``, ``{"N": ...}``):
one client for the store's lifetime, no resource layer (frame items are
:mod:`server.store.dynamodb_frames`'). Reading back
raises :class:`KeyError` or :class:`ValueError` on an item the store did not write.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeAlias

import orjson

from brain.model import Profile
from server.store import codec
from server.store.base import SERVICE_COSTS, AvatarCacheEntry, Usage, UserState

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb.type_defs import AttributeValueTypeDef

    Item: TypeAlias = dict[str, AttributeValueTypeDef]

ItemKey = tuple[str, str]
"""An item's key as plain strings: (partition key, sort key or "")."""


def key_of(item: dict[str, Any], partition: str, sort: str | None) -> ItemKey:
    """The key of an item (or of a ``Key`` map) as plain strings."""
    return (item[partition]["S"], "" if sort is None else item[sort]["S"])


def _attribute(value: Any) -> AttributeValueTypeDef:
    if isinstance(value, bool):
        raise TypeError("a state field is never a boolean")
    if isinstance(value, int):
        return {"N": str(value)}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, list):
        return {"L": [_attribute(v) for v in value]}
    if isinstance(value, dict):
        return {"M": {k: _attribute(v) for k, v in value.items()}}
    raise TypeError(f"no DynamoDB attribute for {type(value).__name__}")


def _plain(attribute: dict[str, Any]) -> Any:
    if "N" in attribute:
        return int(attribute["N"])
    if "S" in attribute:
        return attribute["S"]
    if "L" in attribute:
        return [_plain(v) for v in attribute["L"]]
    if "M" in attribute:
        return {k: _plain(v) for k, v in attribute["M"].items()}
    raise ValueError(f"not an attribute the store writes: {sorted(attribute)}")


def state_item(state: UserState) -> Item:
    """The ``user_state`` item of a state (:func:`codec.state_to_dict`, attribute by
    attribute); fields that are ``None`` (``image_url``) are left out."""
    data = codec.state_to_dict(state)
    health = data.pop("health")
    item = {name: _attribute(value) for name, value in data.items() if value is not None}
    if health is not None:
        # One JSON string: the metrics hold decimals and nulls, which a map of the store's
        # attributes does not, and they are only ever read whole.
        item["health"] = {"S": orjson.dumps(health).decode()}
    item["epoch"] = {"N": str(state.epoch)}
    return item


def profile_attribute(profile: Profile) -> AttributeValueTypeDef:
    """The ``profile`` attribute (a map) as :func:`state_item` writes it."""
    return _attribute(codec.profile_to_dict(profile))


def same_profile(item: dict[str, Any], profile: Profile) -> bool:
    """Whether a live ``user_state`` item holds ``profile`` (however its map is spelled)."""
    stored = item.get("profile")
    return stored is not None and codec.profile_from_dict(_plain(stored)) == profile


def state_of(item: dict[str, Any]) -> UserState:
    """The state a ``user_state`` item holds."""
    data = {name: _plain(value) for name, value in item.items()}
    if isinstance(data.get("health"), str):
        data["health"] = orjson.loads(data["health"])
    return codec.state_from_dict(data)


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
        cache_write_tokens=int(number("cache_write_tokens")),
        cache_read_tokens=int(number("cache_read_tokens")),
        **{name: float(number(name)) for name in SERVICE_COSTS},
    )
