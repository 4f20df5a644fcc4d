"""The cache of verified tokens (:class:`server.auth.TokenCache`): a reconnecting device is
not decoded again, and nothing a cache holds lets a token through that ``verify`` alone
would refuse."""

from __future__ import annotations

import base64

import jwt
import orjson
import pytest

from server.auth import ALGORITHM, LEEWAY_S, DeviceKind, TokenCache, issue, verify
from server.errors import Forbidden, TokenExpired, TokenInvalid

SECRET = "s" * 40
NOW = 1_750_000_000


def _token(user: str = "alice", device: DeviceKind = DeviceKind.PHONE, ttl_s: int = 60) -> str:
    return issue(SECRET, user, device, ttl_s=ttl_s, now_s=NOW)


def test_a_cached_token_is_not_decoded_again() -> None:
    cache = TokenCache()
    token = _token()
    first = verify(token, SECRET, now_s=NOW, cache=cache)
    assert len(cache) == 1
    # The same principal object comes back: the token was not decoded a second time.
    assert verify(token, SECRET, now_s=NOW + 1, cache=cache) is first


def test_expiry_is_honoured_for_a_cached_token() -> None:
    cache = TokenCache()
    token = _token(ttl_s=60)
    verify(token, SECRET, now_s=NOW, cache=cache)
    verify(token, SECRET, now_s=NOW + 60 + LEEWAY_S, cache=cache)  # within the leeway
    with pytest.raises(TokenExpired):
        verify(token, SECRET, now_s=NOW + 60 + LEEWAY_S + 1, cache=cache)
    assert len(cache) == 0  # an expired token is dropped, not kept


def test_an_expired_token_is_never_cached() -> None:
    cache = TokenCache()
    token = _token(ttl_s=60)
    with pytest.raises(TokenExpired):
        verify(token, SECRET, now_s=NOW + 60 + LEEWAY_S + 1, cache=cache)
    assert len(cache) == 0


def test_a_tampered_token_is_refused_though_its_signature_is_cached() -> None:
    cache = TokenCache()
    token = _token(user="alice")
    verify(token, SECRET, now_s=NOW, cache=cache)
    header, payload, signature = token.split(".")
    claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "mallory"
    forged_payload = base64.urlsafe_b64encode(orjson.dumps(claims)).rstrip(b"=").decode()
    forged = f"{header}.{forged_payload}.{signature}"
    with pytest.raises(TokenInvalid):
        verify(forged, SECRET, now_s=NOW, cache=cache)
    assert len(cache) == 1  # only the genuine token


def test_a_token_of_a_rotated_secret_is_refused_though_cached() -> None:
    """Rotating the secret revokes every token signed with the old one, cached or not."""
    cache = TokenCache()
    token = _token()
    verify(token, SECRET, now_s=NOW, cache=cache)
    with pytest.raises(TokenInvalid):
        verify(token, "t" * 40, now_s=NOW, cache=cache)


def test_the_door_is_checked_for_a_cached_token() -> None:
    cache = TokenCache()
    operator = _token(device=DeviceKind.OPERATOR)
    verify(operator, SECRET, now_s=NOW, operator=True, cache=cache)
    with pytest.raises(Forbidden):
        verify(operator, SECRET, now_s=NOW, cache=cache)
    phone = _token(device=DeviceKind.PHONE)
    verify(phone, SECRET, now_s=NOW, cache=cache)
    with pytest.raises(Forbidden):
        verify(phone, SECRET, now_s=NOW, operator=True, cache=cache)


def test_an_invalid_token_is_not_cached() -> None:
    cache = TokenCache()
    bad = jwt.encode({"sub": "a", "dev": "toaster", "exp": NOW + 60, "jti": "x"}, SECRET, ALGORITHM)
    for _ in range(2):
        with pytest.raises(TokenInvalid):
            verify(bad, SECRET, now_s=NOW, cache=cache)
    assert len(cache) == 0


def test_the_cache_is_bounded_and_drops_the_least_recently_used() -> None:
    cache = TokenCache(size=3)
    tokens = [_token(user=f"u{i}") for i in range(4)]
    principals = [verify(t, SECRET, now_s=NOW, cache=cache) for t in tokens[:3]]
    verify(tokens[0], SECRET, now_s=NOW, cache=cache)  # u0 is used again: u1 is the oldest
    verify(tokens[3], SECRET, now_s=NOW, cache=cache)
    assert len(cache) == 3
    assert cache.get(tokens[1], SECRET) is None
    assert cache.get(tokens[0], SECRET) is principals[0]
    assert cache.get(tokens[2], SECRET) is principals[2]


def test_a_cache_needs_room_for_one_token() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        TokenCache(size=0)
