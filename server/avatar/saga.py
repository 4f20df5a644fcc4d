"""The avatar saga: a state change in, an ``image_url`` delta out.

:class:`AvatarSaga` listens to every commit (:attr:`StateService.listeners`). When a commit
changes the user's state, mood or energy band (and was not the saga's own, ``cause="avatar"``)
it starts a saga for that user, as a task of its own so the commit path never waits:

1. prompt from (state, mood, band, base avatar) → :func:`cache_hash`;
2. cache hit → commit ``image_url`` + ``avatar_status=ready`` (a delta is pushed);
3. miss → commit ``avatar_status=generating``, generate (one generation per cache hash at a
   time, however many users need it; at most ``workers`` at once), store the phone PNG and the
   watch PNG (same key, ``-watch`` suffix) in the media store, write the cache entry, commit
   ``image_url`` + ``ready``;
4. retryable :class:`GenerationError` → backoff with full jitter and retry; after the last try
   (or a non-retryable error, or a media/store error) commit ``avatar_status=failed``, which
   records the saga for ``companion avatars retry-failed``.

Every saga commit is conditional: it applies only while the user still has the (state, mood,
band) the saga was started for, so a late image never replaces the one of a newer state, and
only while the user's erase epoch is the one of the commit that started it, so a saga in
flight (or retrying) when the user is erased never writes the user again (the tombstone's
defaults may well match the saga's target).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from brain.avatar import (
    AvatarSpec,
    GeneratedImage,
    GenerationError,
    ImageGenerator,
    build_prompt,
    cache_hash,
)
from brain.model import AvatarStatus, EnergyBand
from server.media.base import MediaStore, content_key
from server.metrics import Metrics
from server.state import Clock, Decide, StateService
from server.store.base import AvatarCacheEntry, Store, UserState
from server.store.retry import RetryPolicy

log = logging.getLogger(__name__)

CAUSE = "avatar"
"""The commit cause of the saga's own commits (which never start a saga)."""

PNG = "image/png"
WATCH_SUFFIX = "-watch"


@dataclass(frozen=True, slots=True)
class Target:
    """What an avatar depends on in a user's state: state, mood and energy band."""

    state: str
    mood: str
    band: EnergyBand

    @classmethod
    def of(cls, user: UserState) -> Target:
        return cls(user.state, user.mood, EnergyBand.of(user.energy))


def starts_saga(previous: UserState, committed: UserState, cause: str) -> bool:
    """Whether a commit needs a new avatar: not the saga's own, and the target changed."""
    return cause != CAUSE and Target.of(previous) != Target.of(committed)


def watch_key(phone_key: str) -> str:
    """The media key of the watch-size image: the phone key with ``-watch`` before the
    extension (``avatars/ab12.png`` → ``avatars/ab12-watch.png``)."""
    stem, dot, extension = phone_key.rpartition(".")
    if not dot or "/" in extension:
        return phone_key + WATCH_SUFFIX
    return f"{stem}{WATCH_SUFFIX}.{extension}"


def conditional(target: Target, changes: Mapping[str, Any]) -> Decide:
    """A ``decide`` that commits ``changes`` only while the user's target is ``target`` and
    something would change."""

    def decide(current: UserState) -> Mapping[str, Any] | None:
        if Target.of(current) != target:
            return None
        visible = current.visible()
        if all(visible[name] == value for name, value in changes.items()):
            return None
        return changes

    return decide


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one saga ended: ``ready`` (``cached`` or generated), ``failed`` or ``stale``."""

    user_id: str
    status: str
    image_url: str | None = None
    cached: bool = False


class AvatarSaga:
    """Runs avatar sagas; see the module docstring. ``retry`` sleeps are injectable."""

    def __init__(
        self,
        state: StateService,
        store: Store,
        media: MediaStore,
        generator: ImageGenerator,
        metrics: Metrics,
        *,
        workers: int = 2,
        retry: RetryPolicy | None = None,
        clock: Clock = time.time,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self._state = state
        self._store = store
        self._media = media
        self._generator = generator
        self._metrics = metrics
        self._retry = retry if retry is not None else RetryPolicy(attempts=4, base_delay=1.0)
        self._clock = clock
        self._workers = asyncio.Semaphore(workers)
        self._inflight: dict[str, asyncio.Task[str]] = {}
        self._tasks: set[asyncio.Task[Outcome]] = set()
        self._closed = False

    async def on_commit(self, previous: UserState, committed: UserState, cause: str) -> None:
        """The :class:`StateService` listener: start a saga when the avatar must change."""
        if starts_saga(previous, committed, cause):
            self.start(committed)

    def start(self, user: UserState) -> asyncio.Task[Outcome]:
        """Run the saga for ``user`` (its state as committed) in a task of its own."""
        if self._closed:
            raise RuntimeError("the avatar saga is closed")
        task = asyncio.create_task(self.run(user), name=f"avatar-saga-{user.user_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def idle(self) -> None:
        """Return once no saga is running (including ones started while waiting)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self, grace_s: float = 10.0) -> None:
        """Let running sagas finish for up to ``grace_s``, then cancel the rest."""
        self._closed = True
        pending = set(self._tasks) | set(self._inflight.values())
        if pending:
            _, late = await asyncio.wait(pending, timeout=grace_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    async def run(self, user: UserState) -> Outcome:
        """The saga for ``user``'s committed state; never raises (failures are committed)."""
        user_id, target = user.user_id, Target.of(user)
        try:
            spec = AvatarSpec.of(user.state, user.mood, user.energy, user.profile.base_avatar)
            prompt = build_prompt(spec)
            key = cache_hash(prompt, spec.base_avatar.value)
            entry = await self._store.get_avatar(key)
            if entry is not None:
                self._metrics.avatar_cache.labels("hit").inc()
                return await self._ready(user, target, entry.image_url, cached=True)
            self._metrics.avatar_cache.labels("miss").inc()
            generating = {"avatar_status": AvatarStatus.GENERATING.value}
            await self._state.update(
                user_id, conditional(target, generating), cause=CAUSE, epoch=user.epoch
            )
            url = await asyncio.shield(self._shared(key, prompt, spec))
            return await self._ready(user, target, url, cached=False)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._metrics.avatar_failures.inc()
            log.warning("avatar saga for %s failed: %r", user_id, exc)
            failed = {"avatar_status": AvatarStatus.FAILED.value}
            try:
                done = await self._state.update(
                    user_id, conditional(target, failed), cause=CAUSE, epoch=user.epoch
                )
            except Exception:
                log.exception("could not record the failed avatar saga of %s", user_id)
                done = None
            return Outcome(user_id, AvatarStatus.FAILED.value if done else "stale")

    async def _ready(self, user: UserState, target: Target, url: str, *, cached: bool) -> Outcome:
        user_id = user.user_id
        ready = {"image_url": url, "avatar_status": AvatarStatus.READY.value}
        committed = await self._state.update(
            user_id, conditional(target, ready), cause=CAUSE, epoch=user.epoch
        )
        if committed is None:
            current = await self._state.current(user_id)
            if Target.of(current) != target or current.epoch != user.epoch:
                return Outcome(user_id, "stale", url, cached)
        return Outcome(user_id, AvatarStatus.READY.value, url, cached)

    def _shared(self, key: str, prompt: str, spec: AvatarSpec) -> asyncio.Task[str]:
        """The generation of ``key``: the one in flight, or a new one."""
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.create_task(self._produce(key, prompt, spec), name=f"avatar-{key[:12]}")
            self._inflight[key] = task
            task.add_done_callback(lambda _: self._inflight.pop(key, None))
        return task

    async def _produce(self, key: str, prompt: str, spec: AvatarSpec) -> str:
        """Generate, store and cache the avatar of ``key``; return the phone image URL."""
        # A generation of this key may have finished between the caller's cache miss and
        # now (it left the in-flight table when it did): look again before paying.
        entry = await self._store.get_avatar(key)
        if entry is not None:
            return entry.image_url
        self._metrics.avatar_waiting.inc()
        try:
            await self._workers.acquire()
        finally:
            self._metrics.avatar_waiting.dec()
        try:
            image = await self._generate(prompt, spec)
            phone_key = content_key(image.phone_png, PNG)
            url = await self._media.put(phone_key, image.phone_png, PNG)
            await self._media.put(watch_key(phone_key), image.watch_png, PNG)
        finally:
            self._workers.release()
        created = int(self._clock() * 1000)
        await self._store.put_avatar(AvatarCacheEntry(key, url, prompt, created))
        return url

    async def _generate(self, prompt: str, spec: AvatarSpec) -> GeneratedImage:
        """One generation with retries of retryable errors; raises the last error."""
        for attempt in range(self._retry.attempts):
            started = time.perf_counter()
            try:
                image = await self._generator.generate(prompt, spec)
            except GenerationError as exc:
                self._metrics.avatar_generations.labels("error").inc()
                if not exc.retryable or attempt + 1 == self._retry.attempts:
                    raise
                log.info("avatar generation failed (%r), retry %d", exc, attempt + 1)
                await self._retry.backoff(attempt)
                continue
            self._metrics.avatar_generation_seconds.observe(time.perf_counter() - started)
            self._metrics.avatar_generations.labels("ok").inc()
            return image
        raise AssertionError("unreachable: the last attempt returns or raises")
