"""Wiring of the avatar saga: generator and media store from the settings, the stage, the
``/media`` handler and ``companion avatars retry-failed``.

:func:`avatar_stage` is the :data:`~server.app.Stage` a full server runs: it builds the
generator (``local`` → :class:`LocalRenderer`, ``gemini`` → :class:`GeminiGenerator`) and the
media store (``local`` → :class:`LocalMediaStore` in ``media_dir`` at ``{base_url}/media``,
``s3://bucket/prefix`` → :class:`S3MediaStore`), puts them in ``services.extras`` (``media``,
``avatar_saga``), registers the saga as a commit listener and closes all of it on the stack.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from brain.avatar import ImageGenerator
from brain.model import AvatarStatus
from server.avatar.saga import AvatarSaga, Outcome
from server.media.local import LocalMediaStore, media_route
from server.parts import build_broker, build_generator, build_media, build_store
from server.services import Services
from server.settings import Settings
from server.state import StateService
from server.store.base import Store
from server.store.retry import RetryPolicy

log = logging.getLogger(__name__)

MEDIA = "media"
SAGA = "avatar_saga"
"""Keys of the media store and the saga in ``Services.extras``."""


async def install_avatars(
    services: Services,
    stack: AsyncExitStack,
    *,
    generator: ImageGenerator | None = None,
    retry: RetryPolicy | None = None,
) -> AvatarSaga:
    """Build the saga for ``services``, register it, and close it with ``stack``."""
    settings = services.settings
    the_generator = generator if generator is not None else build_generator(settings)
    stack.push_async_callback(the_generator.aclose)
    media = build_media(settings)
    stack.push_async_callback(media.close)
    saga = AvatarSaga(
        services.state,
        services.store,
        media,
        the_generator,
        services.metrics,
        workers=settings.avatar_workers,
        retry=retry,
        clock=services.clock,
    )
    services.state.listeners.append(saga.on_commit)
    # Last in, first out: the saga stops (running sagas finish or are cancelled) before the
    # generator, media store and store it uses are closed.
    stack.push_async_callback(saga.close)
    services.extras[MEDIA] = media
    services.extras[SAGA] = saga
    return saga


async def avatar_stage(services: Services, stack: AsyncExitStack) -> None:
    """The avatar saga stage of a full server (generator and media from the settings)."""
    await install_avatars(services, stack)


def avatar_stage_with(
    *, generator: ImageGenerator | None = None, retry: RetryPolicy | None = None
) -> Callable[[Services, AsyncExitStack], Awaitable[None]]:
    """An :func:`avatar_stage` with a given generator or retry policy (tests, benchmarks)."""

    async def stage(services: Services, stack: AsyncExitStack) -> None:
        await install_avatars(services, stack, generator=generator, retry=retry)

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
    """Re-run the saga of every user whose ``avatar_status`` is ``failed`` (and, with
    ``interrupted``, ``generating``: a saga cancelled by a shutdown leaves that); their
    outcomes."""
    statuses = [AvatarStatus.FAILED.value]
    if interrupted:
        statuses.append(AvatarStatus.GENERATING.value)
    outcomes: list[Outcome] = []
    for status in statuses:
        for user_id in await store.users_with_avatar_status(status):
            outcomes.append(await saga.run(await state.current(user_id)))
    return outcomes


async def retry_failed_in_process(
    settings: Settings, *, retry: RetryPolicy | None = None, interrupted: bool = False
) -> list[Outcome]:
    """``companion avatars retry-failed``: the configured store, broker, media and generator,
    in this process (no server needed). Deltas go out through the configured broker, so
    devices on running nodes see them when the broker is Redis."""
    import time

    from server.metrics import Metrics
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
        generator = build_generator(settings)
        stack.push_async_callback(generator.aclose)
        media = build_media(settings)
        stack.push_async_callback(media.close)
        saga = AvatarSaga(
            state, store, media, generator, metrics, workers=settings.avatar_workers, retry=retry
        )
        stack.push_async_callback(saga.close)
        return await retry_failed(saga, state, store, interrupted=interrupted)


def describe(outcomes: Sequence[Outcome]) -> list[str]:
    """One line per outcome, as ``companion avatars retry-failed`` prints them."""
    lines = []
    for outcome in outcomes:
        how = " (cache hit)" if outcome.cached else ""
        url = f" {outcome.image_url}" if outcome.image_url else ""
        lines.append(f"{outcome.user_id}: {outcome.status}{how}{url}")
    return lines or ["no users to retry"]
