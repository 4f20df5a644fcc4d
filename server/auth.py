"""Device tokens (JWT, HS256) and the access rule.

A token names a user (``sub``), a device kind (``dev``), an expiry (``exp``) and an id
(``jti``). A connection or request may touch only its own user's data; a ``service`` token
may touch any user; an ``operator`` token (the fleet page, ``/ops``) touches no user's data
at all: it sees fleet figures only. Browsers are also held to an Origin allow-list.

Verifying a token (PyJWT: base64, JSON, HMAC-SHA256, claim checks) is a good part of what a
WebSocket handshake costs, and a device that reconnects brings the same token again: a
:class:`TokenCache` keeps the principals of tokens verified lately, keyed by the whole token
(so a token that differs in any byte, a tampered payload under a valid signature included,
is verified anew) and by the secret that verified it (so once the secret is rotated, every
token signed with the old one is refused). Expiry and the door checks run on every use,
cached or not.
"""

from __future__ import annotations

import functools
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final
from urllib.parse import urlsplit

import jwt

from server.errors import Forbidden, TokenExpired, TokenInvalid, TokenMissing
from server.protocol import valid_user_id

ALGORITHM = "HS256"
LEEWAY_S = 5
TOKEN_CACHE_SIZE: Final = 32_768
"""Tokens a node remembers as verified (the least recently used go first): more than the
~20,000 devices a node holds, so a whole fleet reconnecting after a cut finds its tokens.
About 0.4 KB each (the token's text; the principal is the one its connection holds)."""


class DeviceKind(StrEnum):
    PHONE = "phone"
    WATCH = "watch"
    DEBUG = "debug"
    SERVICE = "service"
    OPERATOR = "operator"
    """The fleet page's kind: fleet figures only, never a user's data (not even its own)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the token's user and device kind."""

    user_id: str
    device: DeviceKind
    token_id: str
    expires_at: int

    def may_access(self, user_id: str) -> bool:
        """Whether this caller may read or write ``user_id``'s data."""
        if self.device is DeviceKind.OPERATOR:
            return False
        return self.device is DeviceKind.SERVICE or user_id == self.user_id

    def require(self, user_id: str) -> None:
        """Raise :class:`Forbidden` unless this caller may touch ``user_id``."""
        if not self.may_access(user_id):
            raise Forbidden(f"a {self.device} token of another user may not touch this user")


def issue(secret: str, user_id: str, device: DeviceKind, *, ttl_s: int, now_s: int) -> str:
    """A signed token for ``user_id`` on a ``device``, valid for ``ttl_s`` seconds.

    Raises :class:`ValueError` for a malformed user id or a non-positive ttl.
    """
    if not valid_user_id(user_id):
        raise ValueError(f"bad user id {user_id!r}: use 1-128 of A-Z a-z 0-9 . _ @ : -")
    if ttl_s <= 0:
        raise ValueError("ttl must be positive")
    claims = {
        "sub": user_id,
        "dev": device.value,
        "iat": now_s,
        "exp": now_s + ttl_s,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


class TokenCache:
    """Principals of tokens verified lately, at most ``size`` (least recently used out).

    Keyed by the token's whole text and the secret that verified it. Holds no expiry of
    its own: :func:`verify` checks the principal's ``expires_at`` on every use. Raises
    :class:`ValueError` for a size below 1.
    """

    __slots__ = ("_entries", "size")

    def __init__(self, size: int = TOKEN_CACHE_SIZE) -> None:
        if size < 1:
            raise ValueError(f"a token cache needs a size of at least 1, got {size}")
        self.size = size
        self._entries: OrderedDict[str, tuple[str, Principal]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str, secret: str) -> Principal | None:
        """The principal ``token`` was verified as under ``secret``; ``None`` if it was not
        (or under another secret)."""
        entry = self._entries.get(token)
        if entry is None or entry[0] != secret:
            return None
        self._entries.move_to_end(token)
        return entry[1]

    def put(self, token: str, secret: str, principal: Principal) -> None:
        """Remember that ``token`` verified as ``principal`` under ``secret``."""
        self._entries[token] = (secret, principal)
        self._entries.move_to_end(token)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def forget(self, token: str) -> None:
        """Drop ``token`` (no-op if it is not kept)."""
        self._entries.pop(token, None)


def verify(
    token: str | None,
    secret: str,
    *,
    now_s: int,
    operator: bool = False,
    cache: TokenCache | None = None,
) -> Principal:
    """The principal a token names.

    With ``operator`` (the fleet page) only an ``operator`` token is accepted; without it
    (every device and REST route) an ``operator`` token is refused, so it never reads or
    writes a user's data, whatever user its subject names. With a ``cache``, a token it
    holds for ``secret`` is not decoded again (expiry and the door are still checked), and
    a token verified here is added to it.

    Raises :class:`TokenMissing`, :class:`TokenExpired`, :class:`TokenInvalid` or
    :class:`Forbidden` (the wrong kind for this door).
    """
    if not token:
        raise TokenMissing("no token: send 'Authorization: Bearer <token>' or ?token=")
    principal = cache.get(token, secret) if cache is not None else None
    if principal is None:
        principal = _decode(token, secret)
        if cache is not None and principal.expires_at + LEEWAY_S >= now_s:
            cache.put(token, secret, principal)
    # Expiry is checked against the injected clock, not PyJWT's, so tests control time.
    if principal.expires_at + LEEWAY_S < now_s:
        if cache is not None:
            cache.forget(token)
        raise TokenExpired("token expired")
    device = principal.device
    if operator and device is not DeviceKind.OPERATOR:
        raise Forbidden(f"a {device} token may not open the fleet page: use an operator token")
    if not operator and device is DeviceKind.OPERATOR:
        raise Forbidden("an operator token is for the fleet page (/ops) only")
    return principal


def _decode(token: str, secret: str) -> Principal:
    """The principal of a token whose signature and claims are valid (expiry not checked).

    Raises :class:`TokenInvalid`.
    """
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            options={"require": ["sub", "dev", "exp", "jti"], "verify_exp": False},
        )
    except jwt.InvalidTokenError as exc:
        raise TokenInvalid(f"invalid token: {exc}") from None
    exp = claims["exp"]
    if not isinstance(exp, int):
        raise TokenInvalid("invalid token: 'exp' is not a number")
    try:
        device = DeviceKind(claims["dev"])
    except ValueError:
        raise TokenInvalid(f"invalid token: unknown device kind {claims['dev']!r}") from None
    user_id = claims["sub"]
    if not isinstance(user_id, str) or not valid_user_id(user_id):
        raise TokenInvalid("invalid token: bad subject")
    return Principal(user_id, device, str(claims["jti"]), exp)


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer …`` header, or ``None``."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def origin_allowed(origin: str | None, own: Iterable[str], allowed: Iterable[str]) -> bool:
    """Whether a browser ``Origin`` may connect: none given (not a browser), one of the
    server's ``own`` origins (its public URL), or one of ``allowed`` (``*`` allows all).

    Never compared with the request's ``Host`` header: a page on ``evil.example`` whose
    name resolves here would send ``Host`` and ``Origin`` that agree.
    """
    if origin is None:
        return True
    origin = origin.rstrip("/").lower()
    allowed = tuple(a.lower() for a in allowed)
    return "*" in allowed or origin in allowed or origin in (o.rstrip("/").lower() for o in own)


@functools.lru_cache(maxsize=64)
def own_origins(public_url: str, local: tuple[str, int] | None) -> tuple[str, ...]:
    """The origins of the server itself: its public URL if one is configured, else the
    address the client connected to (``local``: the socket's own host and port, never a
    header), and for a loopback address also ``localhost`` on that port. Remembered: a node
    listens on a few addresses, and every handshake asks."""
    if public_url:
        parts = urlsplit(public_url)
        return (f"{parts.scheme}://{parts.netloc}",)
    if local is None:
        return ()
    host, port = local[0], local[1]
    shown = f"[{host}]" if ":" in host else host
    origins = [f"http://{shown}:{port}", f"https://{shown}:{port}"]
    if host in ("127.0.0.1", "::1"):
        origins += [f"http://localhost:{port}", f"https://localhost:{port}"]
    return tuple(origins)
