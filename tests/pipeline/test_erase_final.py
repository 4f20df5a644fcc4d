"""Erase is final: nothing queued, running or retrying before an erase writes the user again.

Every test runs on both stores (the ``store`` fixture of tests/store): the erase epoch lives
in the store, and the commit is conditional on it. "Another node" erases through the store
alone, so this node's pipeline hears nothing of it: only the epoch can stop the write.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from brain.analyst.base import AnalysisRequest
from brain.analyst.rules import RulesAnalyst
from brain.avatar import AvatarSpec, GeneratedImage
from brain.avatar.local import LocalRenderer
from brain.model import Assessment
from brain.scenarios import generate
from server.analysis.pipeline import Pipeline
from server.avatar.saga import AvatarSaga
from server.broker.memory import MemoryBroker
from server.media.local import LocalMediaStore
from server.metrics import Metrics
from server.push.hub import Hub
from server.state import StateService
from server.store.base import Store
from tests.services import dynamodb_local  # noqa: F401  (fixture)
from tests.store.conftest import dynamodb_store_factory, store  # noqa: F401  (fixtures)

SPAN_MS = 15 * 60_000


class GatedAnalyst:
    """The rules analyst, held at the door until the test opens it."""

    def __init__(self) -> None:
        self.inner = RulesAnalyst()
        self.entered = asyncio.Event()
        self.open = asyncio.Event()

    async def assess(self, request: AnalysisRequest) -> Assessment:
        self.entered.set()
        await self.open.wait()
        return await self.inner.assess(request)


class GatedRenderer:
    """The local renderer, held at the door until the test opens it."""

    def __init__(self) -> None:
        self.inner = LocalRenderer()
        self.entered = asyncio.Event()
        self.open = asyncio.Event()

    async def generate(self, prompt: str, spec: AvatarSpec) -> GeneratedImage:
        self.entered.set()
        await self.open.wait()
        return await self.inner.generate(prompt, spec)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture
async def state(store: Store) -> AsyncIterator[StateService]:  # noqa: F811
    broker = MemoryBroker()
    metrics = Metrics()
    hub = Hub(broker, metrics)
    await hub.start()
    try:
        yield StateService(store, hub, metrics, time.time)
    finally:
        await broker.close()


def pipeline_of(store: Store, state: StateService, analyst: object, workers: int = 1) -> Pipeline:  # noqa: F811
    return Pipeline(
        store=store,
        state=state,
        analyst=analyst,  # type: ignore[arg-type]
        metrics=Metrics(),
        clock=time.time,
        span_ms=SPAN_MS,
        workers=workers,
        debounce_s=0,
    )


async def stress_of(store: Store, user_id: str) -> int:  # noqa: F811
    """Store five minutes of stress for ``user_id`` ending now; return the newest ts."""
    now = int(time.time() * 1000)
    frames = generate("stress", start_ms=now - 5 * 60_000, minutes=5)
    await store.put_frames([(user_id, f) for f in frames])
    return frames[-1].ts


async def test_a_write_decided_before_an_erase_is_refused(
    store: Store,  # noqa: F811
    state: StateService,
) -> None:
    first = await state.commit("alice", {"mood": "happy"}, 0)
    await store.delete_user("alice")

    late = await state.update("alice", lambda _: {"mood": "tired"}, cause="t", epoch=first.epoch)

    assert late is None
    assert await store.get_state("alice") is None
    # New work, begun after the erase, writes the user afresh; versions go on growing (the
    # erase's blank state was version 2).
    again = await state.update("alice", lambda _: {"mood": "tired"}, cause="t")
    assert again is not None and (again.version, again.epoch) == (3, 1)


@pytest.mark.parametrize("where", ["this node", "another node"])
async def test_a_running_analysis_commits_nothing_after_an_erase(
    store: Store,  # noqa: F811
    state: StateService,
    where: str,
) -> None:
    await stress_of(store, "alice")
    gate = GatedAnalyst()
    pipeline = pipeline_of(store, state, gate)
    analysis = asyncio.create_task(pipeline.analyse("alice", force=True))
    async with asyncio.timeout(10):
        await gate.entered.wait()

    if where == "this node":
        pipeline.forget("alice")
    await store.delete_user("alice")
    gate.open.set()
    async with asyncio.timeout(10):
        done = await analysis

    assert done is not None and done.frames > 0  # it did read the erased frames...
    assert done.committed is None  # ...and wrote nothing of them
    assert await store.get_state("alice") is None


@pytest.mark.parametrize("where", ["this node", "another node"])
async def test_an_analysis_queued_before_an_erase_writes_nothing(
    store: Store,  # noqa: F811
    state: StateService,
    where: str,
) -> None:
    newest = await stress_of(store, "alice")
    gate = GatedAnalyst()
    pipeline = pipeline_of(store, state, gate, workers=1)
    pipeline.start()
    try:
        pipeline.schedule("blocker", force=True)  # holds the one worker at the gate
        async with asyncio.timeout(10):
            await gate.entered.wait()
        frames = await store.frames_between("alice", newest - SPAN_MS, newest + 1, now_ms=newest)
        await pipeline.on_frames({"alice": frames})  # alice waits in the queue
        assert pipeline.scheduler.pending == 1

        if where == "this node":
            pipeline.forget("alice")
        await store.delete_user("alice")
        gate.open.set()
        async with asyncio.timeout(10):
            await pipeline.idle()
    finally:
        await pipeline.close()

    assert await store.get_state("alice") is None
    assert (await store.tombstone("alice")).epoch == 1


async def test_an_avatar_saga_in_flight_writes_nothing_after_an_erase(
    store: Store,  # noqa: F811
    state: StateService,
    tmp_path: Path,
) -> None:
    # Calm, content, energy 70: the avatar target of a fresh (or erased) user, so only the
    # erase epoch tells the saga's late image from a legitimate one.
    committed = await state.commit("alice", {"reasoning": "all quiet"}, 0)
    renderer = GatedRenderer()
    saga = AvatarSaga(
        state, store, LocalMediaStore(tmp_path / "media"), renderer, Metrics(), workers=1
    )
    running = saga.start(committed)
    async with asyncio.timeout(10):
        await renderer.entered.wait()

    await store.delete_user("alice")
    renderer.open.set()
    async with asyncio.timeout(10):
        outcome = await running
    await saga.close()

    assert outcome.status == "stale"
    assert await store.get_state("alice") is None
