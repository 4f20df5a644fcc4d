"""Exceptions raised by the server package.

::

    CompanionError
     ├── SettingsError          a setting has a bad value (exit code 2 at start)
     ├── AuthError              a caller may not do this (maps to 401 / 403 / close codes)
     │    ├── TokenMissing      no token was given
     │    ├── TokenInvalid      malformed, badly signed, or unknown device kind
     │    ├── TokenExpired      the token's expiry has passed
     │    └── Forbidden         valid token, but not for this user or origin
     ├── StoreError             the store could not do what was asked
     │    ├── VersionConflict   a conditional write lost a race: re-read and decide again
     │    └── FramesNotDurable  some frames of a batch could not be written
     └── BrokerUnavailable      the broker could not carry a message now (it heals by itself)

Wire-level problems (malformed messages, bad frames) are ``server.protocol.ProtocolError``:
the protocol module is self-contained so that clients can import it alone.
"""

from __future__ import annotations


class CompanionError(Exception):
    """Base class of every error this package raises on purpose."""


class SettingsError(CompanionError):
    """A setting has a value the server cannot run with."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


class AuthError(CompanionError):
    """Base of authentication and authorisation failures."""

    status = 401


class TokenMissing(AuthError):
    """No token in the Authorization header or the ``token`` query parameter."""


class TokenInvalid(AuthError):
    """The token is malformed, wrongly signed or names an unknown device kind."""


class TokenExpired(AuthError):
    """The token's expiry has passed."""


class Forbidden(AuthError):
    """The caller is authenticated but may not touch this user (or comes from a foreign origin)."""

    status = 403


class StoreError(CompanionError):
    """The store failed; the operation may be retried."""


class VersionConflict(StoreError):
    """A version-conditional write found another version than the one it expected."""

    def __init__(self, user_id: str, expected: int, found: int | None = None) -> None:
        found_text = "unknown" if found is None else str(found)
        super().__init__(f"user {user_id!r}: expected version {expected}, found {found_text}")
        self.user_id = user_id
        self.expected = expected
        self.found = found


class FramesNotDurable(StoreError):
    """Some rows of a frame batch could not be written; ``failed`` holds their indexes."""

    def __init__(self, failed: frozenset[int], reason: str) -> None:
        super().__init__(f"{len(failed)} frame(s) not written: {reason}")
        self.failed = failed
        self.reason = reason


class BrokerUnavailable(CompanionError):
    """The broker is disconnected or did not take a message in time; it reconnects by itself."""
