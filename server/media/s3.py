"""The production media store: objects in an S3 bucket, through aioboto3.

:class:`S3MediaStore` keeps one S3 client for its whole life (opened on first use or by
:meth:`~S3MediaStore.open`, released by :meth:`~S3MediaStore.close`): a client per call would
pay for credential resolution and a new connection pool every time.

Objects are written with their ``Content-Type`` and ``Cache-Control: public,
max-age=31536000, immutable`` (keys are content addressed), so S3 or a CDN in front of it
serves them with the right headers. The URL handed out is ``public_base_url`` + object key
when a public base (a CDN or a public bucket) is configured; otherwise a presigned ``GET`` URL
valid for ``presign_seconds``. A presigned URL expires: stored in a user's state it stops
working after that time, so production should set ``public_base_url`` and presigning suits
private buckets whose URLs are re-issued.

Region, credentials and endpoint follow the usual AWS configuration: ``endpoint_url=None``
lets botocore use ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` when they are set.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aioboto3
from botocore.config import Config
from botocore.exceptions import ClientError

from server.media.base import IMMUTABLE, check_key

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

MAX_PRESIGN_SECONDS = 7 * 24 * 3600
"""The longest validity SigV4 allows for a presigned URL."""


class S3MediaStore:
    """A :class:`~server.media.base.MediaStore` in ``bucket`` under ``prefix``.

    ``public_base_url`` is the URL of the bucket's root (a CDN origin or the bucket's own
    endpoint): object URLs are it plus the full object key (prefix included). Raises
    ValueError for a ``presign_seconds`` outside 1 s - 7 days or an unsafe ``prefix``.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        region: str,
        endpoint_url: str | None = None,
        public_base_url: str | None = None,
        presign_seconds: int = 3600,
        session: Any | None = None,
    ) -> None:
        if not 1 <= presign_seconds <= MAX_PRESIGN_SECONDS:
            raise ValueError(
                f"presign_seconds must be between 1 and {MAX_PRESIGN_SECONDS},"
                f" got {presign_seconds}"
            )
        prefix = prefix.strip("/")
        self.bucket = bucket
        self.prefix = f"{check_key(prefix)}/" if prefix else ""
        self.region = region
        self.endpoint_url = endpoint_url
        self.public_base_url = public_base_url.rstrip("/") if public_base_url else None
        self.presign_seconds = presign_seconds
        self._session = session if session is not None else aioboto3.Session()
        self._stack: contextlib.AsyncExitStack | None = None
        self._s3: S3Client | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        """Create the S3 client (idempotent; the first put or get does it too)."""
        await self._client()

    async def close(self) -> None:
        """Close the S3 client; idempotent. A later call opens a new one."""
        async with self._lock:
            stack, self._stack, self._s3 = self._stack, None, None
            if stack is not None:
                await stack.aclose()

    async def __aenter__(self) -> S3MediaStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def object_key(self, key: str) -> str:
        """The bucket key of a media key (the prefix joined on). Raises ValueError."""
        return self.prefix + check_key(key)

    async def put(self, key: str, data: bytes, content_type: str) -> str:
        """Store ``data`` and return its URL. Raises ValueError, botocore ``ClientError``."""
        object_key = self.object_key(key)
        s3 = await self._client()
        await s3.put_object(
            Bucket=self.bucket,
            Key=object_key,
            Body=data,
            ContentType=content_type,
            CacheControl=IMMUTABLE,
        )
        return await self.url_for(key)

    async def url_for(self, key: str) -> str:
        """The public or presigned URL of ``key``. Raises ValueError for a bad key."""
        object_key = self.object_key(key)
        if self.public_base_url is not None:
            return f"{self.public_base_url}/{quote(object_key)}"
        s3 = await self._client()
        return await s3.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": object_key},
            ExpiresIn=self.presign_seconds,
        )

    async def get(self, key: str) -> tuple[bytes, str] | None:
        """The bytes and content type under ``key``, or None. Raises ValueError, ClientError."""
        object_key = self.object_key(key)
        s3 = await self._client()
        try:
            response = await s3.get_object(Bucket=self.bucket, Key=object_key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise
        async with response["Body"] as body:
            data = await body.read()
        return data, response.get("ContentType") or "application/octet-stream"

    async def _client(self) -> S3Client:
        if self._s3 is not None:
            return self._s3
        async with self._lock:
            if self._s3 is None:
                stack = contextlib.AsyncExitStack()
                # SigV4 everywhere: presigned URLs of newer regions need it, and it is what
                # a URL's expiry is checked against.
                config = Config(signature_version="s3v4", retries={"mode": "standard"})
                client: S3Client = await stack.enter_async_context(
                    self._session.client(
                        "s3",
                        region_name=self.region,
                        endpoint_url=self.endpoint_url,
                        config=config,
                    )
                )
                self._s3, self._stack = client, stack
            return self._s3
