"""The analysis pipeline: frames in, a new state version out when something changed.

``pipeline_stage`` wires it into the server: a frames hook (called once frames are durable)
adds each user's frames to their in-memory window (:mod:`brain.window`) and schedules the
user (:mod:`server.analysis.scheduler`: debounced, coalesced, a bounded worker pool). With a
Redis broker the hook instead tells each user's owner in the cluster
(:mod:`server.analysis.owners`), which alone schedules the user and reads the new frames
from the store. An analysis

1. (with owners) checks that this node still holds the user's lease;
2. reads the user's state — the erase epoch its commit will be conditional on, the coach
   persona and the previous state for hysteresis — before any frame;
3. brings the window up to date from the store: all of it when cold (or filled under
   another erase epoch), else the frames since the oldest one announced;
4. reads the baseline (14 days of frames before the window, cached per user for an hour)
   and the same days as daily aggregates (:mod:`brain.health`);
5. asks the analyst — the rules, or Claude behind :class:`~brain.analyst.guard.GuardedAnalyst`
   which falls back to the rules on timeout, error, open circuit or spent budget — and adds
   the user's health metrics (fatigue, stress, sleep, HRV trend) to its assessment;
6. hands the assessment to the reactor (:mod:`server.analysis.reactor`), which commits only a
   change of state, mood or energy band (or of the days the health metrics come from) —
   never from an empty window (unless forced), never after an erase (the epoch), and with
   owners only while the lease is still this node's; the commit's history event records
   the model that decided and what it cost (:func:`provenance_of`).

**Analysis time.** A user's analysis runs at the time of the newest frame in their window,
capped at the clock: a live phone's newest frame is seconds old, so that is "now"; a phone
replaying an hour-old backlog gets the assessment of that hour instead of an empty window
("no data") at the clock's time. The window evicts relative to the same time.
"""

from __future__ import annotations

import asyncio
import logging
import operator
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from typing import Final

from redis.exceptions import RedisError

from brain.analyst.base import AnalysisRequest, Analyst, build_request
from brain.analyst.guard import Decision, FallbackReason, GuardedAnalyst
from brain.features import Baseline, compute_baseline
from brain.health import DayAggregate, compute_health, daily_aggregates, settled
from brain.model import Assessment, Frame, State
from brain.window import DEFAULT_MAX_USERS, Window, Windows
from server import provenance
from server.analysis.analysts import build_analyst
from server.analysis.owners import EraseAnnouncer, Lease, RedisOwners
from server.analysis.reactor import CAUSE, react
from server.analysis.scheduler import Scheduler, Sleep
from server.metrics import Metrics
from server.protocol import DEFAULT_MAX_FUTURE_MS
from server.provenance import Provenance, summarize_features
from server.services import PartKey, Services
from server.state import StateService
from server.store.base import Store, UserState

log = logging.getLogger(__name__)

_NOTHING_NEW = -1
"""No frames were announced for a user (``since`` is a time or ``None`` otherwise)."""
_TS = operator.attrgetter("ts")

BASELINE_DAYS = 14
BASELINE_TTL_S = 3600.0
"""A user's baseline is recomputed at most this often (it moves over days, not minutes)."""
MIN_BASELINE_FRAMES = 60
"""Fewer frames than this (ten hours at one per ten minutes) make no baseline: too noisy."""


@dataclass(frozen=True, slots=True)
class Analysed:
    """What one analysis did: the assessment, how it was reached, and the version, if any."""

    user_id: str
    now_ms: int
    frames: int
    assessment: Assessment
    committed: UserState | None
    fallback: FallbackReason | None = None
    cached: bool = False
    force: bool = False


AnalysedListener = Callable[[Analysed], None]


@dataclass(frozen=True, slots=True)
class _Days:
    """A user's stored days as last read: the baseline, the daily aggregates, and when."""

    baseline: Baseline | None
    days: tuple[DayAggregate, ...]
    at_s: float


class Pipeline:
    """Windows, baselines, the scheduler and the analysis of one user; see the module doc.

    With ``owners`` (a Redis broker: several nodes) this node analyses only the users whose
    lease it holds, and reads their frames from the store; without, every user is its own.
    """

    def __init__(
        self,
        *,
        store: Store,
        state: StateService,
        analyst: Analyst,
        metrics: Metrics,
        clock: Callable[[], float],
        span_ms: int,
        workers: int,
        debounce_s: float,
        sleep: Sleep = asyncio.sleep,
        max_users: int = DEFAULT_MAX_USERS,
        owners: RedisOwners | None = None,
        debounce_of: Callable[[str], float] | None = None,
    ) -> None:
        self.store = store
        self.state = state
        self.analyst = analyst
        self.metrics = metrics
        self.clock = clock
        self.owners = owners
        self.windows = Windows(span_ms=span_ms, max_users=max_users)
        self.scheduler = Scheduler(
            self.analyse,
            workers=workers,
            debounce_s=debounce_s,
            metrics=metrics,
            sleep=sleep,
            debounce_of=debounce_of,
        )
        self.listeners: list[AnalysedListener] = []
        """Called after each analysis (tests and benchmarks wait on these)."""
        self._baselines: OrderedDict[str, _Days] = OrderedDict()
        self._max_users = max_users
        self._erasures: Counter[str] = Counter()
        """Erases of each user this node heard of; work queued or begun before one is void."""
        self._queued: dict[str, int] = {}
        """The erase count of each user when it was last scheduled."""
        self._active: Counter[str] = Counter()
        """Analyses of each user running now (the erase count matters only while there is
        queued or running work, so it is dropped when there is none)."""
        self._epochs: OrderedDict[str, int] = OrderedDict()
        """The store's erase epoch each window was filled under (another one, or none known:
        refill); at most ``max_users``, like the windows."""
        self._since: dict[str, int | None] = {}
        """Owned users with frames in the store not in the window yet: the oldest one's time
        (``None``: re-read the whole window)."""

    @classmethod
    def from_services(
        cls, services: Services, analyst: Analyst, owners: RedisOwners | None = None
    ) -> Pipeline:
        settings = services.settings
        return cls(
            store=services.store,
            state=services.state,
            analyst=analyst,
            metrics=services.metrics,
            clock=services.clock,
            span_ms=settings.window_minutes * 60_000,
            workers=settings.analysis_workers,
            debounce_s=settings.debounce_ms / 1000,
            owners=owners,
            debounce_of=tier_debounce(services),
        )

    def start(self) -> None:
        self.scheduler.start()

    async def close(self) -> None:
        """Stop the scheduler: pending analyses run within a grace period, the rest drop."""
        await self.scheduler.stop()

    def schedule(self, user_id: str, *, force: bool = False) -> bool:
        """Ask for an analysis of ``user_id``; ``False`` if the scheduler refused it."""
        self._queued[user_id] = self._erasures[user_id]
        if self.scheduler.schedule(user_id, force=force):
            return True
        self._queued.pop(user_id, None)
        return False

    async def idle(self) -> None:
        """Return once no analysis is pending or running."""
        await self.scheduler.idle()

    def forget(self, user_id: str) -> None:
        """Drop a user's window and baseline, and void every analysis of the user queued or
        running (an erase hook: called before and after the data is deleted, and on every
        node when an erase is announced)."""
        self.release(user_id)
        if isinstance(self.analyst, GuardedAnalyst) and self.analyst.gate is not None:
            self.analyst.gate.forget(user_id)  # what Claude last said of the erased data
        if user_id in self._queued or user_id in self._active:
            self._erasures[user_id] += 1

    def release(self, user_id: str) -> None:
        """Drop what this node caches about a user (it is no longer the user's owner)."""
        self.windows.forget(user_id)
        self._baselines.pop(user_id, None)
        self._epochs.pop(user_id, None)
        self._since.pop(user_id, None)

    def notify(self, user_id: str, since_ms: int | None) -> None:
        """An owned user has new frames in the store from ``since_ms`` on (``None``: read the
        whole window again): remember to read them, and schedule the user."""
        if user_id in self._since:
            earlier = self._since[user_id]
            since_ms = None if earlier is None or since_ms is None else min(earlier, since_ms)
        self._since[user_id] = since_ms
        self.schedule(user_id)

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _time_of(self, window: Window, newest_ms: int | None, clock_ms: int) -> int:
        """The analysis time of a window: its newest frame, capped at the clock."""
        latest = max(window.latest_ts or 0, newest_ms or 0)
        return min(latest, clock_ms) if latest else clock_ms

    async def on_frames(self, by_user: Mapping[str, Sequence[Frame]]) -> None:
        """The frames hook: add durable frames to their users' windows and schedule them;
        with owners, tell each user's owner instead (which may be this node)."""
        clock_ms = self._now_ms()
        if self.owners is not None:
            await self._route(by_user)
            return
        for user_id, frames in by_user.items():
            if not frames:
                continue
            window = self.windows.window(user_id, now_ms=clock_ms)
            at = self._time_of(window, max(map(_TS, frames)), clock_ms)
            window.add(frames, now_ms=at)
            self.schedule(user_id)

    async def _route(self, by_user: Mapping[str, Sequence[Frame]]) -> None:
        """Tell each user's owner (perhaps this node) of their new frames, all at once."""
        assert self.owners is not None
        routes = [
            self.owners.route(user_id, min(f.ts for f in frames))
            for user_id, frames in by_user.items()
            if frames
        ]
        failed = [
            outcome
            for outcome in await asyncio.gather(*routes, return_exceptions=True)
            if isinstance(outcome, BaseException)
        ]
        for failure in failed:
            if not isinstance(failure, RedisError | OSError):
                raise failure
        if failed:
            # The frames are durable: the owner's next refresh of these users reads them.
            log.warning("analysis owner of %d user(s) unknown: Redis unreachable", len(failed))

    async def analyse(self, user_id: str, force: bool = False) -> Analysed | None:
        """Analyse ``user_id`` now and commit a change; see the module docstring.

        Returns ``None`` without analysing when the user was erased since it was queued, or
        when this node does not hold the user's lease (or cannot tell: Redis unreachable).
        """
        erasures = self._erasures[user_id]
        if self._queued.pop(user_id, erasures) != erasures:
            self._drop_erasures(user_id)
            return None  # queued before an erase: nothing erased is analysed again
        self._active[user_id] += 1
        try:
            return await self._analyse(user_id, force, erasures)
        finally:
            self._active[user_id] -= 1
            if not self._active[user_id]:
                del self._active[user_id]
                self._drop_erasures(user_id)

    def _drop_erasures(self, user_id: str) -> None:
        """Forget a user's erase count once no work of the user is queued or running."""
        if user_id not in self._queued and user_id not in self._active:
            self._erasures.pop(user_id, None)

    async def _analyse(self, user_id: str, force: bool, erasures: int) -> Analysed | None:
        lease = None
        if self.owners is not None:
            try:
                lease = await self.owners.lease_of(user_id)
            except (RedisError, OSError) as exc:
                # Its frames are durable; once Redis is back the owner re-reads its users.
                log.warning("analysis skipped: lease unknown, Redis unreachable (%s)", type(exc))
                return None
            if lease is None:
                self.release(user_id)
                return None
        # The epoch is read before any frame: if the user is erased after this read, the
        # commit (conditional on this epoch) fails; if before, the frames are gone already.
        current = await self.state.current(user_id)
        clock_ms = self._now_ms()
        if self._epochs.get(user_id) != current.epoch:
            # Filled before an erase this node did not hear of, or never checked against the
            # store's epoch: start again from the store (the frames it holds are durable).
            held = self.windows.get(user_id, now_ms=clock_ms)
            newest = None if held is None else held.latest_ts
            since = self._since.get(user_id, _NOTHING_NEW)
            self.release(user_id)
            if since != _NOTHING_NEW:
                self._since[user_id] = since
        else:
            newest = None
        self._epochs[user_id] = current.epoch
        self._epochs.move_to_end(user_id)
        while len(self._epochs) > self._max_users:
            self._epochs.popitem(last=False)
        window = self.windows.window(user_id, now_ms=clock_ms)
        await self._refresh(user_id, window, clock_ms, newest)
        at = self._time_of(window, None, clock_ms)
        window.evict(now_ms=at)
        frames = window.frames
        baseline, days = await self._baseline(user_id, at - window.span_ms, clock_ms)
        request = build_request(
            user_id,
            frames,
            now_ms=at,
            profile=current.profile,
            baseline=baseline,
            previous=_state_or_none(current.state),
        )
        decision = with_health(await self._decide(request, force=force), days, request)
        committed = None
        if (frames or force) and await self._still_owner(user_id, lease):
            # The history's event of this commit records who decided and what it cost.
            with provenance.attach(provenance_of(request, decision), cause=CAUSE):
                committed = await react(
                    self.state,
                    user_id,
                    decision.assessment,
                    force=force,
                    valid=lambda: self._erasures[user_id] == erasures,
                    epoch=current.epoch,
                )
        self.metrics.analyses.labels(decision.assessment.source.value).inc()
        done = Analysed(
            user_id,
            at,
            len(frames),
            decision.assessment,
            committed,
            decision.fallback,
            decision.cached,
            force,
        )
        for listener in self.listeners:
            listener(done)
        return done

    async def _refresh(
        self, user_id: str, window: Window, clock_ms: int, newest_ms: int | None
    ) -> None:
        """Bring the window up to date with the store: the whole span when it is cold (or
        the owner asked for it), else the frames since the oldest one it was told of.
        ``newest_ms`` is the newest frame known to have arrived (it sets the analysis time
        of a cold window)."""
        since = self._since.pop(user_id, _NOTHING_NEW)
        told = since is not None and since >= 0
        if since is None:
            window.mark_cold()
        if window.is_cold():
            at = self._time_of(window, newest_ms, clock_ms)
            start = min(since, at) if since is not None and told else at
            stored = await self.store.frames_between(
                user_id, start - window.span_ms, clock_ms + DEFAULT_MAX_FUTURE_MS, now_ms=clock_ms
            )
            newest = stored[-1].ts if stored else None
            window.refill(stored, now_ms=self._time_of(window, newest, clock_ms))
        elif since is not None and told:
            stored = await self.store.frames_between(
                user_id, since, clock_ms + DEFAULT_MAX_FUTURE_MS, now_ms=clock_ms
            )
            newest = stored[-1].ts if stored else None
            window.add(stored, now_ms=self._time_of(window, newest, clock_ms))

    async def _still_owner(self, user_id: str, lease: Lease | None) -> bool:
        """Whether this node may commit: no owners, or the lease (and its fencing token)
        taken at the start of the analysis is still ours."""
        if self.owners is None or lease is None:
            return True
        try:
            return await self.owners.lease_of(user_id) == lease
        except (RedisError, OSError):
            return False  # cannot tell: the next owner's analysis covers these frames

    async def _decide(self, request: AnalysisRequest, *, force: bool = False) -> Decision:
        if isinstance(self.analyst, GuardedAnalyst):
            # A forced analysis (the analyse route, a new persona) passes the trigger gate.
            return await self.analyst.decide(request, force=force)
        return Decision(await self.analyst.assess(request))

    async def _baseline(
        self, user_id: str, before_ms: int, clock_ms: int
    ) -> tuple[Baseline | None, tuple[DayAggregate, ...]]:
        """The user's baseline from the 14 days before ``before_ms``, and the same frames
        as one aggregate per day (:func:`brain.health.daily_aggregates`), cached for an
        hour: both move over days, not minutes."""
        now_s = clock_ms / 1000
        cached = self._baselines.get(user_id)
        if cached is not None and now_s - cached.at_s < BASELINE_TTL_S:
            self._baselines.move_to_end(user_id)
            return cached.baseline, cached.days
        start = before_ms - BASELINE_DAYS * 86_400_000
        frames = await self.store.frames_between(user_id, start, before_ms, now_ms=clock_ms)
        baseline = compute_baseline(frames) if len(frames) >= MIN_BASELINE_FRAMES else None
        # Days in UTC: a profile carries no time zone yet (docs/health.md).
        days = tuple(settled(daily_aggregates(frames), before_ms))
        self._baselines[user_id] = _Days(baseline, days, now_s)
        self._baselines.move_to_end(user_id)
        while len(self._baselines) > self._max_users:
            self._baselines.popitem(last=False)
        return baseline, days


def with_health(
    decision: Decision, days: Sequence[DayAggregate], request: AnalysisRequest
) -> Decision:
    """``decision`` with its assessment's health metrics: the stored ``days`` and the
    window's features (:func:`brain.health.compute_health`). They describe the user, not
    the decision, so the rules and Claude decide without them."""
    health = compute_health(days, request.features)
    return replace(decision, assessment=replace(decision.assessment, health=health))


def provenance_of(request: AnalysisRequest, decision: Decision) -> Provenance:
    """How ``decision`` was reached, as the history keeps it: the model that decided
    (``rules`` or the Claude model id), its calls' cost, the features it saw, and why the
    rules answered instead (the fallback reason, when they did)."""
    return Provenance(
        model=decision.model,
        cost_usd=decision.cost_usd,
        features=summarize_features(request.features),
        fallback=None if decision.fallback is None else decision.fallback.value,
    )


def _state_or_none(value: str) -> State | None:
    try:
        return State(value)
    except ValueError:
        return None


def tier_debounce(services: Services) -> Callable[[str], float] | None:
    """Each user's debounce from their tier (its analysis frequency), when the analyst costs
    money; ``None`` (the node's ``COMPANION_DEBOUNCE_MS`` for everyone) with the rules, which
    cost nothing to run (docs/cost.md, "Tiers"). Never below the node's own debounce."""
    settings = services.settings
    if settings.analyst == "rules":
        return None
    book = services.state.tier_book
    base_ms = settings.debounce_ms
    return lambda user_id: max(base_ms, book.of(user_id).debounce_ms) / 1000


def pipeline_of(services: Services) -> Pipeline | None:
    """The pipeline :func:`pipeline_stage` installed, or ``None`` when it is not running."""
    return services.parts.get(PIPELINE)


async def pipeline_stage(services: Services, stack: AsyncExitStack) -> None:
    """Build the analyst and the pipeline, hook it to durable frames, stop it with the app."""
    analyst, close_client = build_analyst(
        services.settings, services.store, services.metrics, services.cost
    )
    if close_client is not None:
        stack.push_async_callback(close_client)  # runs after the pipeline stopped (LIFO)
    owners = None
    if services.settings.broker != "memory":
        owners = RedisOwners(services.settings.broker, lease_ms=services.settings.owner_lease_ms)
    pipeline = Pipeline.from_services(services, analyst, owners)
    erase_hook = pipeline.forget
    if owners is not None:
        owners.on_notice = pipeline.notify
        owners.on_release = pipeline.release
        owners.on_erase = pipeline.forget
        await owners.start()
        stack.push_async_callback(owners.close)  # after the pipeline stopped (LIFO)
        log.info("analysis owners: node %s, lease %d ms", owners.node_id, owners.lease_ms)
        erase_hook = EraseAnnouncer(pipeline.forget, owners)
        stack.push_async_callback(erase_hook.close)
    pipeline.start()
    stack.push_async_callback(pipeline.close)
    services.frames_hooks.append(pipeline.on_frames)
    services.erase_hooks.append(erase_hook)
    services.parts.add(PIPELINE, pipeline)
    log.info(
        "analysis pipeline: analyst=%s workers=%d debounce=%dms window=%dmin",
        services.settings.analyst,
        services.settings.analysis_workers,
        services.settings.debounce_ms,
        services.settings.window_minutes,
    )


PIPELINE: Final[PartKey[Pipeline]] = PartKey("pipeline")
"""Key of the node's :class:`Pipeline` in ``Services.parts``."""
