"""Exceptions raised by the avatar building blocks.

::

    AvatarError
     └── GenerationError     an image generator or a clip maker could not produce an avatar
                             (``retryable`` says whether trying again may help)

A generator or clip maker raises only :class:`GenerationError`; whatever the SDK or the
network raised is kept as ``__cause__`` for the log, and the saga decides on retries from
``retryable``.
"""

from __future__ import annotations


class AvatarError(Exception):
    """Base class of every error the avatar package raises on purpose."""


class GenerationError(AvatarError):
    """An image generator or a clip maker failed.

    ``retryable`` is true when the same request may succeed later (rate limits, server
    errors, timeouts, dropped connections) and false when it will fail the same way again
    (a refused prompt, a bad key, an answer without an image that cannot be decoded).
    ``status`` is the HTTP status of the upstream answer, when there was one.
    """

    def __init__(self, message: str, *, retryable: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status

    def __repr__(self) -> str:
        return f"GenerationError({str(self)!r}, retryable={self.retryable}, status={self.status})"
