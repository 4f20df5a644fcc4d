"""The embedded media store: files in a directory, served by this server at ``/media``.

:class:`LocalMediaStore` writes each object atomically (a temporary file in the same
directory, flushed to disk, then ``os.replace``), so a reader sees the old object or the new
one, never half of one, even if the process dies mid-write. Its content type and ETag go in a
small JSON sidecar under ``.meta/``, written first: an object that is visible always has its
metadata. Temporary files and ``.meta`` start with a dot, which no valid key may
(:func:`~server.media.base.check_key`), so they can neither collide with an object nor be
served.

:func:`media_route` is the Starlette route that serves the objects: correct content type,
``Cache-Control: public, max-age=31536000, immutable`` (keys are content addressed), a strong
ETag with ``304`` on a matching ``If-None-Match``, and ``404`` for a missing or invalid key.
Objects are read whole into memory: avatars are tens to hundreds of kilobytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import mimetypes
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from server.etag import none_match
from server.media.base import IMMUTABLE, check_key, etag_of

META_DIR = ".meta"


@dataclass(frozen=True, slots=True)
class StoredObject:
    """An object as the route serves it."""

    data: bytes
    content_type: str
    etag: str


class LocalMediaStore:
    """A :class:`~server.media.base.MediaStore` in ``directory``, public at ``base_url``.

    ``base_url`` is what URLs start with: a path (``/media``) or an absolute URL
    (``https://companion.example/media``) when devices need one. Its path is where
    :func:`media_route` mounts. Raises ValueError when that path is empty.
    """

    def __init__(self, directory: Path, base_url: str = "/media") -> None:
        self.directory = Path(directory)
        self.base_url = base_url.rstrip("/")
        self.route_path = urlsplit(self.base_url).path
        if not self.route_path:
            raise ValueError(f"media base URL needs a path to serve under, got {base_url!r}")

    def url_for(self, key: str) -> str:
        """The public URL of ``key``. Raises ValueError for an invalid key."""
        return f"{self.base_url}/{quote(check_key(key))}"

    async def put(self, key: str, data: bytes, content_type: str) -> str:
        """Store ``data`` atomically and return its URL. Raises ValueError, OSError."""
        path = self._path(key)
        meta = json.dumps({"content_type": content_type, "etag": etag_of(data)}).encode()
        await asyncio.to_thread(self._write, path, self._meta_path(key), data, meta)
        return self.url_for(key)

    async def get(self, key: str) -> tuple[bytes, str] | None:
        """The bytes and content type under ``key``, or None. Raises ValueError for a bad key."""
        stored = await self.read(key)
        return None if stored is None else (stored.data, stored.content_type)

    async def read(self, key: str) -> StoredObject | None:
        """The object under ``key`` with its ETag, or None. Raises ValueError for a bad key."""
        return await asyncio.to_thread(self._read, self._path(key), self._meta_path(key))

    async def close(self) -> None:
        """Nothing to release: files are opened per call."""

    def _path(self, key: str) -> Path:
        return self.directory / check_key(key)

    def _check_inside(self, path: Path) -> None:
        # check_key already forbids '..'; this also catches a symlink planted in the tree.
        # It touches the disk, so it runs in the worker thread with the read or write.
        if not path.resolve().is_relative_to(self.directory.resolve()):
            raise ValueError(f"media path {path} resolves outside the media directory")

    def _meta_path(self, key: str) -> Path:
        return self.directory / META_DIR / f"{check_key(key)}.json"

    def _write(self, path: Path, meta_path: Path, data: bytes, meta: bytes) -> None:
        self._check_inside(path)
        _write_atomic(meta_path, meta)
        _write_atomic(path, data)

    def _read(self, path: Path, meta_path: Path) -> StoredObject | None:
        self._check_inside(path)
        try:
            data = path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        try:
            meta = json.loads(meta_path.read_bytes())
            return StoredObject(data, str(meta["content_type"]), str(meta["etag"]))
        except (OSError, ValueError, KeyError):
            # A file someone copied in by hand: guess what it is rather than refuse it.
            guessed = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            return StoredObject(data, guessed, etag_of(data))


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see all of it or none of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def media_route(store: LocalMediaStore) -> Route:
    """The ``GET``/``HEAD`` route serving ``store`` at ``{store.route_path}/{key:path}``."""

    async def serve_media(request: Request) -> Response:
        try:
            stored = await store.read(request.path_params["key"])
        except ValueError:
            stored = None  # an invalid key names nothing; say so without saying why
        if stored is None:
            # The saga may write this key a moment from now: do not let anyone cache the 404.
            return PlainTextResponse("Not Found", 404, headers={"Cache-Control": "no-store"})
        headers = {
            "Cache-Control": IMMUTABLE,
            "ETag": stored.etag,
            "X-Content-Type-Options": "nosniff",
        }
        if none_match(request.headers.get("if-none-match"), stored.etag):
            return Response(status_code=304, headers=headers)
        return Response(stored.data, media_type=stored.content_type, headers=headers)

    return Route(
        f"{store.route_path}/{{key:path}}", serve_media, methods=["GET", "HEAD"], name="media"
    )
