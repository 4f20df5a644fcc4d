"""The clip step of the avatar saga: once the image is committed, a short loop beside it.

The saga commits the image first (``image_url`` + ``avatar_status=ready``, and
``video_status=generating``), then hands the avatar to :meth:`ClipStep.run`, which

1. makes the clip (one per avatar at a time, however many users need it; at most ``workers``
   at once, apart from the image workers, so a slow Veo clip never holds up an image);
2. stores it in the media store under its content key (``avatars/<sha256>.webp`` or
   ``.mp4``) and writes the avatar cache entry with both URLs (the image's and the clip's,
   under the same cache hash);
3. commits ``video_url`` + ``video_status=ready``: a second, conditional update that applies
   only while the user still shows the image the clip was made for.

A clip that fails (after retrying retryable errors with :class:`~brain.backoff.Backoff`)
never fails the image: it is logged, counted (``companion_avatar_clip_failures``) and
committed as ``video_status=failed``, and the image stays. A clip refused for good (a
safety filter, a missed deadline…) is remembered for the process's life, so cache hits of
that avatar do not pay for it again and again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from brain.avatar import AvatarSpec, Clip, ClipMaker, GenerationError
from brain.backoff import Backoff
from brain.model import AvatarStatus
from server.media.base import MediaStore, content_key
from server.metrics import Metrics
from server.state import Clock, Decide, StateService
from server.store.base import AvatarCacheEntry, Store, UserState

log = logging.getLogger(__name__)

REFUSED_MEMORY = 1024
"""How many avatars whose clip failed for good are remembered (oldest forgotten first)."""

DEFAULT_BACKOFF = Backoff(attempts=3, base=2.0, cap=30.0)
"""Clip retries: few and slow (a Veo clip is long and paid for)."""


@dataclass(frozen=True, slots=True)
class ClipJob:
    """The avatar a clip is made for: its cache hash, image prompt, spec and image."""

    key: str
    prompt: str
    spec: AvatarSpec
    image_url: str
    still: bytes | None = None
    """The phone PNG, when the saga has it (a generated image; not a cache hit)."""


def clip_changes(video_url: str | None, status: AvatarStatus) -> dict[str, Any]:
    """The state fields of a clip: its URL and status."""
    return {"video_url": video_url, "video_status": status.value}


def for_image(image_url: str, changes: Mapping[str, Any]) -> Decide:
    """A ``decide`` that commits ``changes`` only while the user's image is ``image_url``
    and something would change (a clip belongs to its image, not to a state)."""

    def decide(current: UserState) -> Mapping[str, Any] | None:
        if current.image_url != image_url:
            return None
        visible = current.visible()
        if all(visible[name] == value for name, value in changes.items()):
            return None
        return changes

    return decide


class ClipStep:
    """Makes, stores, caches and commits clips; see the module docstring.

    ``cause`` is the commit cause of its commits (the saga's, so that they start no saga).
    """

    def __init__(
        self,
        state: StateService,
        store: Store,
        media: MediaStore,
        maker: ClipMaker,
        metrics: Metrics,
        *,
        cause: str,
        workers: int = 2,
        backoff: Backoff | None = None,
        clock: Clock = time.time,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self._state = state
        self._store = store
        self._media = media
        self._maker = maker
        self._metrics = metrics
        self._cause = cause
        self._workers = asyncio.Semaphore(workers)
        self._backoff = backoff if backoff is not None else DEFAULT_BACKOFF
        self._clock = clock
        self._inflight: dict[tuple[str, str], asyncio.Task[str]] = {}
        self._refused: OrderedDict[str, None] = OrderedDict()

    def refused(self, key: str) -> bool:
        """Whether the clip of the avatar ``key`` failed for good in this process."""
        return key in self._refused

    async def run(self, user_id: str, job: ClipJob) -> str | None:
        """Make (or join) the clip of ``job`` and commit it for ``user_id``; the clip's URL,
        or ``None`` when it failed (then ``video_status=failed`` is committed). Raises
        nothing but :class:`asyncio.CancelledError`."""
        try:
            url = await asyncio.shield(self._shared(job))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._metrics.avatar_clip_failures.inc()
            log.warning("avatar clip for %s failed, the image stays: %r", user_id, exc)
            await self._commit(user_id, job.image_url, clip_changes(None, AvatarStatus.FAILED))
            return None
        await self._commit(user_id, job.image_url, clip_changes(url, AvatarStatus.READY))
        return url

    async def close(self) -> None:
        """Cancel the clips still being made (the saga gave them their grace period)."""
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _commit(self, user_id: str, image_url: str, changes: Mapping[str, Any]) -> None:
        try:
            await self._state.update(user_id, for_image(image_url, changes), cause=self._cause)
        except Exception:
            log.exception("could not commit the avatar clip of %s", user_id)

    def _shared(self, job: ClipJob) -> asyncio.Task[str]:
        """The clip of ``job``'s image: the one in flight, or a new one."""
        slot = (job.key, job.image_url)
        task = self._inflight.get(slot)
        if task is None:
            task = asyncio.create_task(self._produce(job), name=f"avatar-clip-{job.key[:12]}")
            self._inflight[slot] = task
            task.add_done_callback(lambda _: self._inflight.pop(slot, None))
        return task

    async def _produce(self, job: ClipJob) -> str:
        """Make, store and cache the clip of ``job``; its URL. Raises what failed."""
        async with self._workers:
            clip = await self._make(job)
        key = content_key(clip.data, clip.content_type)
        url = await self._media.put(key, clip.data, clip.content_type)
        created = int(self._clock() * 1000)
        entry = AvatarCacheEntry(job.key, job.image_url, job.prompt, created, video_url=url)
        await self._store.put_avatar(entry)
        return url

    async def _make(self, job: ClipJob) -> Clip:
        """One clip, retrying retryable errors; raises the last error."""
        retry = 0
        while True:
            started = time.perf_counter()
            try:
                clip = await self._maker.make_clip(job.prompt, job.spec, job.still)
            except GenerationError as exc:
                self._metrics.avatar_clips.labels("error").inc()
                if not exc.retryable:
                    self._remember_refused(job.key)
                    raise
                if not self._backoff.may_retry(retry):
                    raise
                log.info("avatar clip failed (%r), retry %d", exc, retry + 1)
                await self._backoff.wait(retry)
                retry += 1
                continue
            self._metrics.avatar_clip_seconds.observe(time.perf_counter() - started)
            self._metrics.avatar_clips.labels("ok").inc()
            return clip

    def _remember_refused(self, key: str) -> None:
        self._refused[key] = None
        self._refused.move_to_end(key)
        while len(self._refused) > REFUSED_MEMORY:
            self._refused.popitem(last=False)
