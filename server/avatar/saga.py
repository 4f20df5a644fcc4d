"""The avatar saga: a state change in, an ``image_url`` delta out.

:class:`AvatarSaga` listens to every commit (:attr:`StateService.listeners`). When a commit
changes the user's state, mood or energy band (and was not the saga's own, ``cause="avatar"``)
it starts a saga for that user, as a task of its own so the commit path never waits:

1. prompt from (state, mood, band, base avatar) → :func:`cache_hash`;
2. cache hit → commit ``image_url`` + ``avatar_status=ready`` (a delta is pushed). When this
   process knows the cache entry already (it read or wrote it lately) and nothing is left to
   make (the clip is cached too, or there are no clips), :meth:`AvatarSaga.fold` adds the
   image to the state's own commit (a :attr:`StateService.amenders` hook) and no saga
   starts: one write and one delta for the change and its image;
3. miss → commit ``avatar_status=generating``, have the image made (:mod:`server.avatar.stills`:
   one generation per cache hash at a time, however many users need it; at most ``workers``
   at once; the phone and watch PNGs to the media store, then the cache entry), commit
   ``image_url`` + ``ready``;
4. retryable :class:`GenerationError` → backoff with full jitter and retry; after the last try
   (or a non-retryable error, or a media/store error) commit ``avatar_status=failed`` and
   add a dead letter with the reason (``companion avatars failed`` lists them,
   ``companion avatars retry-failed`` replays them);
5. with a clip maker, the image commit carries ``video_status=generating`` (or the cached
   clip's ``video_url``), then :class:`~server.avatar.clips.ClipStep` makes the clip and
   commits ``video_url`` in a second delta; a failed clip never fails the image.

``cache_reads=False`` (``COMPANION_AVATAR_CACHE=off``, the rollback switch) skips every cache
read (:class:`~server.avatar.stills.Stills`), so each change generates anew.

The user's tier (:mod:`server.avatar.allowance`) bounds the generations per day and how old
a cached image may be; past the day's generations the saga keeps a cached image, however
old, or the user's previous one (outcome ``limited``), never an error. Each generation is
billed to the user's day (:mod:`server.cost`).

A saga that generates is durable (:mod:`server.avatar.durable`): it records itself before the
``generating`` commit and forgets the record when it ends, so a saga cut short by a stopped
process is resumed by :meth:`AvatarSaga.keep` — at once by the same node when it starts
again, by any node once the lease ends — and gives up (a dead letter) after
``max_attempts`` starts.

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
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, replace
from typing import Any

from brain.avatar import ClipMaker, ImageGenerator
from brain.backoff import Backoff
from brain.cost import Service
from brain.model import AvatarStatus, EnergyBand
from brain.tiers import DEFAULT_TIERS, Limit, Tier, Tiers
from server.avatar.allowance import AvatarAllowance, fresh
from server.avatar.clips import ClipJob, ClipStep, clip_changes
from server.avatar.durable import SagaLedger, reason_of
from server.avatar.stills import Stills
from server.cost import CostMeter
from server.media.base import MediaStore
from server.metrics import Metrics
from server.state import Clock, Decide, StateService
from server.store.base import SagaRecord, Store, UserState

log = logging.getLogger(__name__)

CAUSE = "avatar"
"""The commit cause of the saga's own commits (which never start a saga)."""

LIMITED = "limited"
"""The outcome of a saga past the tier's generations for the day (the image stays)."""
KNOWN_ENTRIES = 4096
"""Commits whose image :meth:`AvatarSaga.fold` added and whose listener call is to come
(a bound against writes that failed and left theirs behind)."""


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
    """How one saga ended: ``ready`` (``cached`` or generated), ``failed``, ``stale`` or
    ``limited`` (the tier's generations for the day were spent; the image stays);
    ``video_url`` is the clip's when one was committed."""

    user_id: str
    status: str
    image_url: str | None = None
    cached: bool = False
    video_url: str | None = None


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
        retry: Backoff | None = None,
        clock: Clock = time.time,
        clips: ClipMaker | None = None,
        clip_backoff: Backoff | None = None,
        cache_reads: bool = True,
        owner: str = "local",
        lease_s: float = 120.0,
        max_attempts: int = 3,
        tiers: Tiers = DEFAULT_TIERS,
        cost: CostMeter | None = None,
        image_usd: float = 0.0,
        clip_usd: float = 0.0,
    ) -> None:
        self.stills = Stills(
            store,
            media,
            generator,
            metrics,
            workers=workers,
            retry=retry,
            clock=clock,
            cache_reads=cache_reads,
        )
        self._state = state
        self._metrics = metrics
        self._clock = clock
        self._tasks: set[asyncio.Task[Outcome]] = set()
        self._closed = False
        self._tiers = tiers
        self._cost = cost
        self._prices = {Service.IMAGES: image_usd, Service.CLIPS: clip_usd}
        """What one generation costs (the local renderers: nothing)."""
        self.allowance = AvatarAllowance()
        self.ledger = SagaLedger(
            store, owner=owner, lease_s=lease_s, clock=clock, max_attempts=max_attempts
        )
        self._keeper: asyncio.Task[None] | None = None
        self._folded: dict[str, int] = {}
        """The version of each user whose image :meth:`fold` added to a commit being written."""
        self._clips: ClipStep | None = None
        if clips is not None:
            self._clips = ClipStep(
                state,
                store,
                media,
                clips,
                metrics,
                cause=CAUSE,
                workers=workers,
                backoff=clip_backoff,
                clock=clock,
            )

    async def on_commit(self, previous: UserState, committed: UserState, cause: str) -> None:
        """The :class:`StateService` listener: start a saga when the avatar must change (and
        :meth:`fold` did not commit its image with the change already)."""
        if self._folded.pop(committed.user_id, None) == committed.version:
            self._metrics.avatar_cache.labels("hit").inc()
            return
        if starts_saga(previous, committed, cause):
            self.start(committed)

    def fold(
        self, previous: UserState, committed: UserState, cause: str
    ) -> Mapping[str, Any] | None:
        """The :class:`StateService` amender: the image fields of ``committed``'s avatar when
        it needs a new one that this process knows is cached and fresh for the user's tier,
        and nothing is left to make (the clip is cached, refused, or there are no clips);
        else ``None`` (the saga does it after the commit, reading the cache itself)."""
        stills = self.stills
        if self._closed or not stills.cache_reads or not starts_saga(previous, committed, cause):
            return None
        try:
            key, prompt, spec = stills.avatar_of(committed)
        except ValueError:
            return None  # not an avatar we can draw: the saga records why, as before
        entry = stills.known(key)
        now_ms = int(self._clock() * 1000)
        if entry is None or not fresh(entry, self._tiers.tier_of(committed.profile), now_ms):
            return None
        clip = self._clip_fields(ClipJob(key, prompt, spec, entry.image_url), entry.video_url)
        if clip["video_status"] == AvatarStatus.GENERATING.value:
            return None  # a clip to make: the saga's path, which makes it after the image
        if len(self._folded) >= KNOWN_ENTRIES:  # writes that failed left theirs behind
            self._folded.clear()
        self._folded[committed.user_id] = committed.version
        return {"image_url": entry.image_url, "avatar_status": AvatarStatus.READY.value, **clip}

    def start(self, user: UserState) -> asyncio.Task[Outcome]:
        """Run the saga for ``user`` (its state as committed) in a task of its own."""
        if self._closed:
            raise RuntimeError("the avatar saga is closed")
        return self._spawn(self.run(user), user.user_id)

    def _spawn(self, saga: Coroutine[Any, Any, Outcome], user_id: str) -> asyncio.Task[Outcome]:
        task = asyncio.create_task(saga, name=f"avatar-saga-{user_id}")
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
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.gather(self._keeper, return_exceptions=True)
        pending: set[asyncio.Task[Any]] = set(self._tasks) | self.stills.in_flight()
        if pending:
            _, late = await asyncio.wait(pending, timeout=grace_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self._clips is not None:
            await self._clips.close()

    def keep(self) -> None:
        """Start the keeper: now and every third of the lease, renew the leases of the sagas
        running here and resume the interrupted ones this node may claim."""
        if self._keeper is None and not self._closed:
            self._keeper = asyncio.create_task(self._keep(), name="avatar-saga-keeper")

    async def _keep(self) -> None:
        while True:
            try:
                await self.ledger.renew()
                await self.resume_interrupted()
            except Exception as exc:  # the store is down: try again next round
                log.warning("avatar saga keeper: %r", exc)
            await asyncio.sleep(self.ledger.lease_s / 3)

    async def resume_interrupted(self) -> list[asyncio.Task[Outcome]]:
        """Claim the interrupted sagas this node may resume and run each in a task.

        Raises :class:`~server.errors.StoreError` when the store fails."""
        if self._closed:
            return []
        return [
            self._spawn(self._resume(record), record.user_id)
            for record in await self.ledger.claimable()
        ]

    async def _resume(self, record: SagaRecord) -> Outcome:
        """Resume an interrupted saga for the user's current state (a newer state than the
        one it began for needs its image too), or give up after ``max_attempts`` starts."""
        try:
            user = await self._state.current(record.user_id)
        except Exception as exc:
            log.warning("cannot resume the avatar saga of %s: %r", record.user_id, exc)
            self.ledger.drop(record)  # its lease ends; a later round tries again
            return Outcome(record.user_id, "stale")
        if record.attempts > self.ledger.max_attempts:
            reason = f"interrupted {record.attempts - 1} times"
            return await self._fail(user, Target.of(user), record, record.cache_hash, reason)
        log.info("resuming the avatar saga of %s, start %d", record.user_id, record.attempts)
        return await self.run(user, record)

    async def run(self, user: UserState, record: SagaRecord | None = None) -> Outcome:
        """The saga for ``user``'s committed state; never raises (failures are committed).

        ``record`` is the claimed record of an interrupted saga this run resumes."""
        user_id, target = user.user_id, Target.of(user)
        held, key = record, ""
        try:
            key, prompt, spec = self.stills.avatar_of(user)
            entry = await self.stills.cached(key)
            tier, now_ms = self._tiers.tier_of(user.profile), int(self._clock() * 1000)
            allowed = self.allowance.may_generate(user_id, tier, now_ms)
            if entry is not None and (fresh(entry, tier, now_ms) or not allowed):
                self._metrics.avatar_cache.labels("hit").inc()
                job = ClipJob(key, prompt, spec, entry.image_url)
                outcome = await self._ready(
                    user_id, target, job, entry.video_url, cached=True, epoch=user.epoch
                )
            elif not allowed:
                outcome = await self._over_allowance(user, target, tier)
                await self._forget(held)
                return outcome
            else:
                reads = self.stills.cache_reads
                self._metrics.avatar_cache.labels("miss" if reads else "bypass").inc()
                self.allowance.spend(user_id, now_ms)
                self._bill(user_id, Service.IMAGES, tier)
                if held is None:
                    held = await self.ledger.begin(user_id, key)
                generating = {"avatar_status": AvatarStatus.GENERATING.value}
                await self._state.update(
                    user_id, conditional(target, generating), cause=CAUSE, epoch=user.epoch
                )
                # A stale entry (older than the tier's cache lifetime) must not come back.
                newer_than = 0 if entry is None else entry.created_at + 1
                still = await asyncio.shield(self.stills.shared(key, prompt, spec, newer_than))
                job = ClipJob(key, prompt, spec, still.url, still.png)
                outcome = await self._ready(
                    user_id, target, job, still.video_url, cached=False, epoch=user.epoch
                )
        except asyncio.CancelledError:
            raise  # its record stays: the saga is resumed when this node starts again
        except Exception as exc:
            log.warning("avatar saga for %s failed: %r", user_id, exc)
            return await self._fail(user, target, held, key, reason_of(exc))
        await self._forget(held)
        if outcome.status != AvatarStatus.READY.value or not self._clip_wanted(job, outcome):
            return outcome
        # The image is committed and pushed: only now the clip (a clip never delays or
        # fails its image; the clip step commits its own outcome).
        assert self._clips is not None
        video_url = await self._clips.run(user_id, job)
        if video_url is not None:
            self._bill(user_id, Service.CLIPS, self._tiers.tier_of(user.profile))
        return replace(outcome, video_url=video_url)

    def _bill(self, user_id: str, service: Service, tier: Tier) -> None:
        if self._cost is not None and self._prices[service] > 0:
            self._cost.add(user_id, service, self._prices[service], tier=tier.name)

    async def _fail(
        self, user: UserState, target: Target, held: SagaRecord | None, key: str, reason: str
    ) -> Outcome:
        """Commit ``avatar_status=failed`` while the target stands and add a dead letter;
        ``stale`` when a newer state superseded the saga."""
        user_id = user.user_id
        self._metrics.avatar_failures.inc()
        failed = {"avatar_status": AvatarStatus.FAILED.value}
        try:
            done = await self._state.update(
                user_id, conditional(target, failed), cause=CAUSE, epoch=user.epoch
            )
            if done is None:
                # Nothing to commit: either a newer state superseded this one (stale),
                # or it was failed already (a repeat failure, e.g. from retry-failed).
                current = await self._state.current(user_id)
                again = (
                    current.avatar_status == AvatarStatus.FAILED.value
                    and current.epoch == user.epoch
                )
                done = current if again and Target.of(current) == target else None
            if done is not None:
                await self.ledger.dead_letter(
                    held,
                    user_id=user_id,
                    cache_hash=key,
                    state=user.state,
                    mood=user.mood,
                    reason=reason,
                )
        except Exception:
            log.exception("could not record the failed avatar saga of %s", user_id)
            done = None
        await self._forget(held)
        return Outcome(user_id, AvatarStatus.FAILED.value if done else "stale")

    async def _over_allowance(self, user: UserState, target: Target, tier: Tier) -> Outcome:
        """The user's generations for today are spent and no cached image fits: the user
        keeps the image they have (``ready`` again when there is one)."""
        log.info("avatar generations of a %s user are spent for today", tier.name)
        if self._cost is not None:
            self._cost.limited(tier, Limit.AVATAR_DAILY)
        if user.image_url is None:
            return Outcome(user.user_id, LIMITED)
        kept = {"avatar_status": AvatarStatus.READY.value}
        await self._state.update(
            user.user_id, conditional(target, kept), cause=CAUSE, epoch=user.epoch
        )
        return Outcome(user.user_id, LIMITED, user.image_url)

    async def _forget(self, held: SagaRecord | None) -> None:
        """End the record of a saga that ended; a store error leaves it for the keeper
        (a resumed saga whose image is committed already changes nothing)."""
        try:
            await self.ledger.end(held)
        except Exception as exc:
            log.warning("could not end the avatar saga record: %r", exc)

    def _clip_wanted(self, job: ClipJob, outcome: Outcome) -> bool:
        """Whether the saga must still make the clip of ``job`` after its image commit."""
        return (
            self._clips is not None
            and outcome.video_url is None
            and not self._clips.refused(job.key)
        )

    def _clip_fields(self, job: ClipJob, video_url: str | None) -> dict[str, Any]:
        """What the image commit says of the clip: the cached one, one coming, or none."""
        if self._clips is None:
            return clip_changes(None, AvatarStatus.NONE)
        if video_url is not None:
            return clip_changes(video_url, AvatarStatus.READY)
        if self._clips.refused(job.key):
            return clip_changes(None, AvatarStatus.FAILED)
        return clip_changes(None, AvatarStatus.GENERATING)

    async def _ready(
        self,
        user_id: str,
        target: Target,
        job: ClipJob,
        video_url: str | None,
        *,
        cached: bool,
        epoch: int,
    ) -> Outcome:
        """Commit the image of ``job`` (and what is known of its clip) while the target
        stands and the user was not erased since erase ``epoch``."""
        url = job.image_url
        ready = {
            "image_url": url,
            "avatar_status": AvatarStatus.READY.value,
            **self._clip_fields(job, video_url),
        }
        video = ready["video_url"]
        committed = await self._state.update(
            user_id, conditional(target, ready), cause=CAUSE, epoch=epoch
        )
        if committed is None:
            current = await self._state.current(user_id)
            if Target.of(current) != target or current.epoch != epoch:
                return Outcome(user_id, "stale", url, cached)
        return Outcome(user_id, AvatarStatus.READY.value, url, cached, video)
