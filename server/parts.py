"""Each replaceable part of a server, built from the settings: store, broker, image
generator, clip maker and media store.

The app, the avatar stage and the command line build their parts here, so each choice
(``COMPANION_STORE``, ``COMPANION_BROKER``, ``COMPANION_AVATAR``, ``COMPANION_VIDEO``,
``COMPANION_MEDIA``) is read in one place. Adapters are imported only when chosen: a SQLite
server never imports aioboto3.
"""

from __future__ import annotations

import os
from urllib.parse import urlparse

from brain.avatar import ClipMaker, ImageGenerator
from server.broker.base import Broker
from server.media.base import MediaStore
from server.settings import Settings
from server.store.base import Store


def aws_region() -> str:
    """The AWS region from the standard variables (default eu-central-1)."""
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION", "eu-central-1")


def build_store(settings: Settings) -> Store:
    """The store adapter the settings name."""
    if settings.store == "dynamodb":
        from server.store.dynamodb import DynamoDBStore

        return DynamoDBStore(
            table_prefix=settings.table_prefix,
            region=aws_region(),
            endpoint_url=os.environ.get("AWS_ENDPOINT_URL_DYNAMODB"),
            frame_retention_days=settings.frame_retention_days,
            history_retention_days=settings.history_retention_days,
        )
    from server.store.sqlite import SQLiteStore

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return SQLiteStore(
        settings.sqlite_path,
        frame_retention_days=settings.frame_retention_days,
        history_retention_days=settings.history_retention_days,
    )


def build_broker(settings: Settings) -> Broker:
    """The broker the settings name."""
    if settings.broker == "memory":
        from server.broker.memory import MemoryBroker

        return MemoryBroker()
    from server.broker.redis import RedisBroker

    return RedisBroker(
        settings.broker,
        heartbeat_s=settings.broker_heartbeat_s,
        command_timeout_s=settings.broker_timeout_s,
    )


def build_generator(settings: Settings) -> ImageGenerator:
    """The image generator the settings name. Raises ValueError (Gemini without a key)."""
    if settings.avatar == "gemini":
        from brain.avatar.gemini import GeminiGenerator

        return GeminiGenerator(model=settings.gemini_model)
    from brain.avatar.local import LocalRenderer

    return LocalRenderer()


def build_clip_maker(settings: Settings) -> ClipMaker | None:
    """The avatar clip maker the settings name, or ``None`` when clips are off.

    Raises ValueError (Veo with neither a Google Cloud project nor an API key).
    """
    if settings.video == "off":
        return None
    if settings.video == "veo":
        from brain.avatar.veo import VeoClipMaker

        return VeoClipMaker(
            model=settings.veo_model,
            timeout_s=settings.video_timeout_s,
            poll_s=settings.video_poll_s,
        )
    from brain.avatar.clip_local import LocalClipMaker

    return LocalClipMaker()


def build_media(settings: Settings) -> MediaStore:
    """The media store the settings name (a directory, or an S3 bucket and prefix)."""
    if settings.media == "local":
        from server.media.local import LocalMediaStore

        return LocalMediaStore(settings.media_dir, base_url=f"{settings.base_url}/media")
    from server.media.s3 import S3MediaStore

    parsed = urlparse(settings.media)
    return S3MediaStore(
        parsed.netloc,
        parsed.path.strip("/"),
        region=aws_region(),
        endpoint_url=os.environ.get("AWS_ENDPOINT_URL_S3"),
        public_base_url=settings.media_public_url or None,
    )
