"""Wiring of the avatar saga: generator, clip maker and media store from the settings, the
stage, the ``/media`` handler, ``companion avatars failed`` and ``companion avatars
retry-failed``.

:func:`avatar_stage` is the :data:`~server.app.Stage` a full server runs: it builds the
generator (``local`` → :class:`LocalRenderer`, ``gemini`` → :class:`GeminiGenerator`), the
clip maker (``COMPANION_VIDEO``: ``off``, ``local`` → :class:`LocalClipMaker`, ``veo`` →
:class:`VeoClipMaker`), reads the cache switch (``COMPANION_AVATAR_CACHE``) and the
media store (``local`` → :class:`LocalMediaStore` in ``media_dir`` at ``{base_url}/media``,
``s3://bucket/prefix`` → :class:`S3MediaStore`), puts them in ``services.parts`` (``media``,
``avatar_saga``), registers the saga as a commit listener, starts its keeper (which resumes
sagas a stopped process left, see :mod:`server.avatar.durable`) and closes all of it on the
stack.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from typing import Final

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from brain.avatar import ImageGenerator
from brain.backoff import Backoff
from brain.model import AvatarStatus
from brain.prices import clips_cost, images_cost
from server.avatar.durable import node_name
from server.avatar.saga import AvatarSaga, Outcome
from server.cost import CostMeter
from server.media.base import MediaStore
from server.media.local import LocalMediaStore, media_route
from server.metrics import Metrics
from server.parts import (
    build_broker,
    build_clip_maker,
    build_generator,
    build_media,
    build_store,
)
from server.services import PartKey, Services
from server.settings import Settings
from server.state import Clock, StateService
from server.store.base import DeadLetter, Store

log = logging.getLogger(__name__)

MEDIA: Final[PartKey[MediaStore]] = PartKey("media")
SAGA: Final[PartKey[AvatarSaga]] = PartKey("avatar_saga")
"""Keys of the media store and the saga in ``Services.parts``."""


def build_saga(
    settings: Settings,
    state: StateService,
    store: Store,
    metrics: Metrics,
    stack: AsyncExitStack,
    *,
    owner: str,
    generator: ImageGenerator | None = None,
    retry: Backoff | None = None,
    clip_backoff: Backoff | None = None,
    clock: Clock = time.time,
    cost: CostMeter | None = None,
) -> tuple[AvatarSaga, MediaStore]:
    """The saga the settings describe and its media store (with the generator and clip
    maker), each part and then the saga closed by ``stack`` — last in, first out, so running
    sagas finish or are cancelled before the parts they use are closed. The saga's keeper
    is not started.

    Raises ValueError when a generator or clip maker the settings name cannot be built
    (Gemini or Veo without credentials).
    """
    the_generator = generator if generator is not None else build_generator(settings)
    stack.push_async_callback(the_generator.aclose)
    clips = build_clip_maker(settings)
    if clips is not None:
        stack.push_async_callback(clips.aclose)
    media = build_media(settings)
    stack.push_async_callback(media.close)
    saga = AvatarSaga(
        state,
        store,
        media,
        the_generator,
        metrics,
        workers=settings.avatar_workers,
        retry=retry,
        clock=clock,
        clips=clips,
        clip_backoff=clip_backoff,
        cache_reads=settings.avatar_cache == "on",
        owner=owner,
        lease_s=settings.avatar_lease_s,
        tiers=settings.tiers,
        cost=cost,
        image_usd=images_cost(1) if settings.avatar == "gemini" else 0.0,
        clip_usd=clips_cost(1) if settings.video == "veo" else 0.0,
    )
    stack.push_async_callback(saga.close)
    return saga, media


async def install_avatars(
    services: Services,
    stack: AsyncExitStack,
    *,
    generator: ImageGenerator | None = None,
    retry: Backoff | None = None,
    clip_backoff: Backoff | None = None,
) -> AvatarSaga:
    """Build the saga for ``services`` (:func:`build_saga`), register it as a commit
    listener and erase hook, start its keeper, and close it with ``stack``.

    Raises ValueError when a generator or clip maker the settings name cannot be built.
    """
    saga, media = build_saga(
        services.settings,
        services.state,
        services.store,
        services.metrics,
        stack,
        owner=node_name(services.settings.port),
        generator=generator,
        retry=retry,
        clip_backoff=clip_backoff,
        clock=services.clock,
        cost=services.cost,
    )
    services.state.listeners.append(saga.on_commit)
    services.state.amenders.append(saga.fold)  # a cached image goes with its state's commit
    services.erase_hooks.append(saga.allowance.forget)
    saga.keep()
    services.parts.add(MEDIA, media)
    services.parts.add(SAGA, saga)
    return saga


async def avatar_stage(services: Services, stack: AsyncExitStack) -> None:
    """The avatar saga stage of a full server (generator and media from the settings)."""
    await install_avatars(services, stack)


def avatar_stage_with(
    *,
    generator: ImageGenerator | None = None,
    retry: Backoff | None = None,
    clip_backoff: Backoff | None = None,
) -> Callable[[Services, AsyncExitStack], Awaitable[None]]:
    """An :func:`avatar_stage` with a given generator or retry policies (tests, benchmarks)."""

    async def stage(services: Services, stack: AsyncExitStack) -> None:
        await install_avatars(
            services, stack, generator=generator, retry=retry, clip_backoff=clip_backoff
        )

    return stage


@functools.lru_cache(maxsize=8)
def _serve(store: LocalMediaStore) -> Callable[[Request], object]:
    return media_route(store).endpoint


async def serve_media(request: Request, store: object) -> Response:
    """Serve ``/media/{key}`` from a :class:`LocalMediaStore`; 404 for any other store
    (S3 objects are fetched from S3 or its CDN, never through this server)."""
    if not isinstance(store, LocalMediaStore):
        return PlainTextResponse("Not Found", 404, headers={"Cache-Control": "no-store"})
    response = await _serve(store)(request)  # type: ignore[misc]
    assert isinstance(response, Response)
    return response


async def retry_failed(
    saga: AvatarSaga, state: StateService, store: Store, *, interrupted: bool = False
) -> list[Outcome]:
    """Drain the dead-letter list: re-run the saga of every user with a dead letter or whose
    ``avatar_status`` is ``failed`` (and, with ``interrupted``, ``generating``), for the
    user's current state, then remove the letters replayed (a repeat failure has added a new
    one). The outcomes, one per user."""
    letters = await store.dead_letters()
    users = dict.fromkeys(letter.user_id for letter in letters)
    statuses = [AvatarStatus.FAILED.value]
    if interrupted:
        statuses.append(AvatarStatus.GENERATING.value)
    for status in statuses:
        users.update(dict.fromkeys(await store.users_with_avatar_status(status)))
    outcomes: list[Outcome] = []
    for user_id in users:
        outcomes.append(await saga.run(await state.current(user_id)))
        for letter in letters:
            if letter.user_id == user_id:
                await store.remove_dead_letter(user_id, letter.key)
    return outcomes


async def retry_failed_in_process(
    settings: Settings, *, retry: Backoff | None = None, interrupted: bool = False
) -> list[Outcome]:
    """``companion avatars retry-failed``: the configured store, broker, media and generator,
    in this process (no server needed). Deltas go out through the configured broker, so
    devices on running nodes see them when the broker is Redis."""

    from server.push.hub import Hub

    metrics = Metrics()
    async with AsyncExitStack() as stack:
        store = build_store(settings)
        await store.open()
        stack.push_async_callback(store.close)
        broker = build_broker(settings)
        hub = Hub(broker, metrics)
        await hub.start()
        stack.push_async_callback(hub.close)
        state = StateService(store, hub, metrics, time.time)
        saga, _ = build_saga(
            settings,
            state,
            store,
            metrics,
            stack,
            owner=f"{socket.gethostname()}:cli-{os.getpid()}",
            retry=retry,
        )
        return await retry_failed(saga, state, store, interrupted=interrupted)


def describe(outcomes: Sequence[Outcome]) -> list[str]:
    """One line per outcome, as ``companion avatars retry-failed`` prints them."""
    lines = []
    for outcome in outcomes:
        how = " (cache hit)" if outcome.cached else ""
        url = f" {outcome.image_url}" if outcome.image_url else ""
        clip = f" clip {outcome.video_url}" if outcome.video_url else ""
        lines.append(f"{outcome.user_id}: {outcome.status}{how}{url}{clip}")
    return lines or ["no users to retry"]


async def dead_letters_in_process(settings: Settings) -> list[DeadLetter]:
    """``companion avatars failed``: the dead letters of the configured store."""
    store = build_store(settings)
    await store.open()
    try:
        return await store.dead_letters()
    finally:
        await store.close()


def describe_letters(letters: Sequence[DeadLetter]) -> list[str]:
    """One line per dead letter, as ``companion avatars failed`` prints them: when (UTC),
    user, state/mood, prompt hash (12 characters), starts, reason."""
    lines = []
    for letter in letters:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(letter.failed_at / 1000))
        lines.append(
            f"{when} {letter.user_id} {letter.state}/{letter.mood}"
            f" prompt {letter.cache_hash[:12] or '-'} starts {letter.attempts}: {letter.reason}"
        )
    return lines or ["no dead letters"]
