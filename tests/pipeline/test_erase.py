"""Erasing a user (GDPR) also drops what the pipeline holds about them in memory."""

from __future__ import annotations

import asyncio
import time

from brain.analyst.base import AnalysisRequest
from brain.analyst.rules import RulesAnalyst
from brain.model import Assessment
from server.analysis.pipeline import pipeline_of, pipeline_stage
from server.settings import Settings
from tests.conftest import auth, start_server


async def test_delete_user_forgets_the_window(settings: Settings) -> None:
    async with start_server(settings, stages=[pipeline_stage]) as live:
        pipeline = pipeline_of(live.services)
        assert pipeline is not None
        now = int(time.time() * 1000)
        async with live.http() as http:
            answer = await http.post(
                "/v1/users/alice/frames",
                json={"frames": [{"ts": now - 1000, "hr": 70}, {"ts": now, "hr": 71}]},
                headers=auth("alice"),
            )
            assert answer.status_code == 200
            assert pipeline.windows.get("alice", now_ms=now) is not None
            erased = await http.delete("/v1/users/alice", headers=auth("alice"))
            assert erased.status_code == 200
        assert pipeline.windows.get("alice", now_ms=now) is None
        await pipeline.idle()


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


async def test_an_analysis_running_when_the_user_is_erased_commits_nothing(
    settings: Settings,
) -> None:
    async with start_server(settings, stages=[pipeline_stage]) as live:
        pipeline = pipeline_of(live.services)
        assert pipeline is not None
        gate = GatedAnalyst()
        pipeline.analyst = gate
        analysis = asyncio.create_task(pipeline.analyse("alice", force=True))
        async with asyncio.timeout(5):
            await gate.entered.wait()
        async with live.http() as http:
            erased = await http.delete("/v1/users/alice", headers=auth("alice"))
            assert erased.status_code == 200
            gate.open.set()
            async with asyncio.timeout(5):
                done = await analysis
            assert done.committed is None
            state = await http.get("/v1/users/alice/state", headers=auth("alice"))
        assert state.json()["version"] == 0
        assert await live.services.store.get_state("alice") is None
        # A later analysis (after the erase) commits as usual.
        gate2 = GatedAnalyst()
        gate2.open.set()
        pipeline.analyst = gate2
        again = await pipeline.analyse("alice", force=True)
        assert again.committed is not None
        assert again.committed.version == 1
