"""Erasing a user (GDPR) also drops what the pipeline holds about them in memory."""

from __future__ import annotations

import time

from server.pipeline import pipeline_of, pipeline_stage
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
