"""Stills: the avatar images sagas commit, found in the cache or generated once.

:class:`Stills` is the image half of the avatar saga (:mod:`server.avatar.saga`), which
decides *when* a user needs an image and commits it; this module decides *how* one is had:

- the cache hash, prompt and spec of a user's avatar, remembered by what they depend on
  (state, mood, energy band, base avatar): the saga's fold asks on every commit that
  changes them, and building a prompt costs more than the rest of the fold;
- the avatar cache (``Store.get_avatar``/``put_avatar``), and the entries this process read
  or wrote lately (:meth:`Stills.known`, what lets a commit carry its image at once);
- one generation per cache hash at a time, however many users need it, and at most
  ``workers`` at once; retryable :class:`~brain.avatar.GenerationError`\\ s are retried
  under the ``retry`` backoff; the phone PNG and the watch PNG (same key, ``-watch``
  suffix) go to the media store, then the cache entry to the store.

``cache_reads=False`` (``COMPANION_AVATAR_CACHE=off``, the rollback switch) skips every
cache read, so each change generates anew; entries are still written.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass

from brain.avatar import (
    AvatarSpec,
    GeneratedImage,
    GenerationError,
    ImageGenerator,
    build_prompt,
    cache_hash,
)
from brain.backoff import Backoff
from brain.model import EnergyBand
from server.media.base import MediaStore, content_key
from server.metrics import Metrics
from server.state import Clock
from server.store.base import AvatarCacheEntry, Store, UserState

log = logging.getLogger(__name__)

PNG = "image/png"
WATCH_SUFFIX = "-watch"
KNOWN_ENTRIES = 4096
"""Avatar cache entries (and prompts) a process remembers (one per prompt: each state,
mood, energy band and base avatar, a few hundred in practice)."""

Avatar = tuple[str, str, AvatarSpec]
"""An avatar's cache hash, prompt and spec."""


def watch_key(phone_key: str) -> str:
    """The media key of the watch-size image: the phone key with ``-watch`` before the
    extension (``avatars/ab12.png`` → ``avatars/ab12-watch.png``)."""
    stem, dot, extension = phone_key.rpartition(".")
    if not dot or "/" in extension:
        return phone_key + WATCH_SUFFIX
    return f"{stem}{WATCH_SUFFIX}.{extension}"


@dataclass(frozen=True, slots=True)
class Still:
    """A generation's result: the phone image URL, its PNG when this process made it, and
    the clip URL when another saga had already made and cached both."""

    url: str
    png: bytes | None = None
    video_url: str | None = None


class Stills:
    """Avatar images by cache hash: cached, in flight, or generated; see the module
    docstring. Raises :class:`ValueError` when ``workers`` is below 1."""

    def __init__(
        self,
        store: Store,
        media: MediaStore,
        generator: ImageGenerator,
        metrics: Metrics,
        *,
        workers: int = 2,
        retry: Backoff | None = None,
        clock: Clock = time.time,
        cache_reads: bool = True,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self._store = store
        self._media = media
        self._generator = generator
        self._metrics = metrics
        self._retry = retry if retry is not None else Backoff(attempts=4, base=1.0)
        self._clock = clock
        self._workers = asyncio.Semaphore(workers)
        self._inflight: dict[str, asyncio.Task[Still]] = {}
        self.cache_reads = cache_reads
        self._known: OrderedDict[str, AvatarCacheEntry] = OrderedDict()
        """Cache entries read or written lately, by cache hash."""
        self._avatars: dict[tuple[str, str, EnergyBand, str], Avatar] = {}
        """Cache hash, prompt and spec by (state, mood, band, base avatar)."""

    def avatar_of(self, user: UserState) -> Avatar:
        """The cache hash, prompt and spec of ``user``'s avatar (remembered). Raises
        :class:`ValueError` for a value outside the avatar vocabulary."""
        ident = (user.state, user.mood, EnergyBand.of(user.energy), user.profile.base_avatar)
        known = self._avatars.get(ident)
        if known is None:
            spec = AvatarSpec.of(user.state, user.mood, user.energy, user.profile.base_avatar)
            prompt = build_prompt(spec)
            known = (cache_hash(prompt, spec.base_avatar.value), prompt, spec)
            if len(self._avatars) >= KNOWN_ENTRIES:
                self._avatars.clear()
            self._avatars[ident] = known
        return known

    def known(self, key: str) -> AvatarCacheEntry | None:
        """The cache entry of ``key`` if this process read or wrote it lately (no read)."""
        return self._known.get(key)

    async def cached(self, key: str) -> AvatarCacheEntry | None:
        """The cache entry of ``key`` from the store; ``None`` when there is none or reads
        are off. Raises :class:`~server.errors.StoreError`."""
        if not self.cache_reads:
            return None
        entry = await self._store.get_avatar(key)
        if entry is not None:
            self._know(entry)
        return entry

    def shared(
        self, key: str, prompt: str, spec: AvatarSpec, newer_than: int = 0
    ) -> asyncio.Task[Still]:
        """The generation of ``key``: the one in flight, or a new one (which reuses a cache
        entry made since the caller's miss, if created at ``newer_than`` ms or later)."""
        task = self._inflight.get(key)
        if task is None:
            produce = self._produce(key, prompt, spec, newer_than)
            task = asyncio.create_task(produce, name=f"avatar-{key[:12]}")
            self._inflight[key] = task
            task.add_done_callback(lambda _: self._inflight.pop(key, None))
        return task

    def in_flight(self) -> set[asyncio.Task[Still]]:
        """The generations running now (what a closing saga waits for)."""
        return set(self._inflight.values())

    def _know(self, entry: AvatarCacheEntry) -> None:
        """Remember a cache entry read or written (the least recent goes past the bound)."""
        self._known[entry.cache_hash] = entry
        self._known.move_to_end(entry.cache_hash)
        while len(self._known) > KNOWN_ENTRIES:
            self._known.popitem(last=False)

    async def _produce(self, key: str, prompt: str, spec: AvatarSpec, newer_than: int) -> Still:
        """Generate, store and cache the avatar of ``key``; the phone image URL and PNG."""
        # A generation of this key may have finished between the caller's cache miss and
        # now (it left the in-flight table when it did): look again before paying.
        entry = await self.cached(key)
        if entry is not None and entry.created_at >= newer_than:
            return Still(entry.image_url, video_url=entry.video_url)
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
        entry = AvatarCacheEntry(key, url, prompt, created)
        await self._store.put_avatar(entry)
        self._know(entry)
        return Still(url, image.phone_png)

    async def _generate(self, prompt: str, spec: AvatarSpec) -> GeneratedImage:
        """One generation with retries of retryable errors; raises the last error."""
        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                image = await self._generator.generate(prompt, spec)
            except GenerationError as exc:
                self._metrics.avatar_generations.labels("error").inc()
                if not exc.retryable or not self._retry.may_retry(attempt):
                    raise
                log.info("avatar generation failed (%r), retry %d", exc, attempt + 1)
                await self._retry.wait(attempt)
                attempt += 1
                continue
            self._metrics.avatar_generation_seconds.observe(time.perf_counter() - started)
            self._metrics.avatar_generations.labels("ok").inc()
            return image
