"""The media store interface: where generated avatars are kept and the URL devices load.

Two adapters implement :class:`MediaStore`: :mod:`server.media.local` (a directory, served by
this server at ``/media``; the embedded default) and :mod:`server.media.s3` (a bucket, served
by S3 or a CDN in front of it).

Keys are content addressed (:func:`content_key`): a key names its bytes for ever, so stores
and browsers may cache an object indefinitely (:data:`IMMUTABLE`) and writing the same key
twice is harmless. A key is a relative, ``/``-separated path; :func:`check_key` refuses
anything that could step outside the store.
"""

from __future__ import annotations

import hashlib
import mimetypes
import re
from typing import Protocol

IMMUTABLE = "public, max-age=31536000, immutable"
"""``Cache-Control`` of every stored object: content-addressed keys never change meaning."""

MAX_KEY_LENGTH = 512

_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
"""One path segment: letters, digits, ``_ . -``; not starting with a dot (no ``..``, no
hidden files, and room for a store's own dot-directories)."""

_EXTENSIONS = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "video/mp4": ".mp4",
    "video/webm": ".webm",
}


class MediaStore(Protocol):
    """Stores media bytes under keys and says at which URL devices can fetch them."""

    async def put(self, key: str, data: bytes, content_type: str) -> str:
        """Store ``data`` under ``key`` and return its public URL.

        Raises ValueError for a key :func:`check_key` refuses; adapter errors (``OSError``,
        botocore's ``ClientError``) propagate for the caller to retry.
        """
        ...

    async def get(self, key: str) -> tuple[bytes, str] | None:
        """The bytes and content type stored under ``key``, or ``None``.

        Raises ValueError for a key :func:`check_key` refuses.
        """
        ...

    async def close(self) -> None:
        """Release connections; idempotent."""
        ...


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe relative path; raise ValueError saying why if not.

    Refused: empty keys, absolute paths, backslashes, empty, ``.`` or ``..`` segments,
    segments starting with a dot, characters other than letters, digits and ``_ . - /``,
    and keys longer than :data:`MAX_KEY_LENGTH`.
    """
    if not key:
        raise ValueError("media key is empty")
    if len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"media key is longer than {MAX_KEY_LENGTH} characters")
    if key.startswith("/") or "\\" in key:
        raise ValueError(f"media key must be a relative '/'-separated path, got {key!r}")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise ValueError(f"media key has an empty, '.' or '..' segment: {key!r}")
        if not _SEGMENT.fullmatch(segment):
            raise ValueError(
                f"media key segment {segment!r} must be letters, digits, '_', '.', '-'"
                " and not start with '.'"
            )
    return key


def content_key(data: bytes, content_type: str, prefix: str = "avatars") -> str:
    """A content-addressed key for ``data``: ``{prefix}/{sha256}{extension}``."""
    extension = _EXTENSIONS.get(content_type) or mimetypes.guess_extension(content_type) or ""
    return check_key(f"{prefix}/{hashlib.sha256(data).hexdigest()}{extension}")


def etag_of(data: bytes) -> str:
    """A strong ETag for ``data`` (quoted sha256 prefix)."""
    return f'"{hashlib.sha256(data).hexdigest()[:32]}"'
