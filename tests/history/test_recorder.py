"""The recorder: what a commit becomes in the history, provenance, the avatar saga's
versions, failures and retention."""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from brain.backoff import Backoff, instant
from brain.features import compute_features
from brain.model import Frame
from server import provenance
from server.avatar.stage import SAGA, avatar_stage
from server.history import (
    HISTORY,
    HistoryReader,
    HistoryRecorder,
    event_of,
    history_stage,
    purge_once,
)
from server.metrics import Metrics
from server.provenance import MAX_FEATURES, MAX_TEXT, Provenance, summarize_features
from server.settings import Settings
from server.store.base import HistoryEvent, HistoryQuery, UserState
from server.store.sqlite import SQLiteStore
from tests.conftest import LiveServer, auth, start_server
from tests.history.conftest import Clock
from tests.server.conftest import commit

LLM = Provenance(
    model="claude-haiku-4-5",
    cost_usd=0.00042,
    features={"hr": 92.5, "hr_slope": 1.8, "steps_per_min": 0},
)


def change(**changes: Any) -> Any:
    """A decide function that always commits ``changes``."""
    return lambda current: changes


async def events(live: LiveServer, user: str) -> list[HistoryEvent]:
    reader = HistoryReader(live.services.store, live.services.clock)
    return (await reader.page(user, HistoryQuery(limit=100))).events[::-1]


def counted(metrics: Metrics, outcome: str) -> float:
    value = metrics.registry.get_sample_value(
        "companion_history_events_total", {"outcome": outcome}
    )
    return value or 0.0


async def test_provenance_attached_to_an_analysis_goes_to_its_commit_only(
    history_server: LiveServer,
) -> None:
    state = history_server.services.state
    with provenance.attach(LLM, cause="analysis"):
        await state.update("alice", change(state="stressed", source="llm"), cause="analysis")
        await state.update("alice", change(mood="anxious"), cause="analysis")  # same block
    await state.update("alice", change(mood="tired"), cause="analysis")  # after it

    first, second, third = await events(history_server, "alice")

    assert (first.source, first.cause) == ("llm", "analysis")
    assert first.provenance == LLM
    assert second.provenance == Provenance()
    assert third.provenance == Provenance()


async def test_a_commit_of_another_cause_does_not_take_the_provenance(
    history_server: LiveServer,
) -> None:
    """The avatar saga's tasks inherit the analysis' context: their commits (cause
    ``avatar``) must not be recorded as the model's decision."""
    state = history_server.services.state
    await state.update("alice", change(state="stressed"), cause="demo")
    with provenance.attach(LLM, cause="analysis"):
        await state.update("alice", change(avatar_status="generating"), cause="avatar")
        await state.update("alice", change(mood="anxious", source="llm"), cause="analysis")

    _, saga, analysis = await events(history_server, "alice")

    assert (saga.source, saga.cause, saga.provenance) == ("avatar", "avatar", Provenance())
    assert (analysis.source, analysis.provenance) == ("llm", LLM)


def test_provenance_is_bounded_before_it_is_kept() -> None:
    wide = Provenance(
        model="m" * 500,
        cost_usd=math.nan,
        features={f"f{i:03d}": float(i) for i in range(100)} | {"note": "x" * 500, "bad": math.inf},
        fallback="f" * 500,
    )

    kept = wide.bounded()

    assert kept.model == "m" * MAX_TEXT and kept.fallback == "f" * MAX_TEXT
    assert kept.cost_usd is None
    assert kept.features is not None and len(kept.features) == MAX_FEATURES
    assert kept.features["bad"] is None  # sorted first: "bad" < "f000" < … < "note"
    assert "note" not in kept.features
    assert Provenance(cost_usd=-1.0).bounded().cost_usd is None


def test_event_of_names_the_changed_fields_and_who_decided() -> None:
    before = UserState.initial("alice")
    after = replace(
        before, version=1, state="stressed", mood="anxious", source="llm", updated_at=5
    ).rehashed()
    avatar = replace(after, version=2, image_url="https://m/x.png", avatar_status="ready")

    decided = event_of(before, after, "analysis")
    drawn = event_of(after, avatar, "avatar")

    assert (decided.version, decided.at, decided.source) == (1, 5, "llm")
    assert decided.changed == ("state", "mood", "source")
    assert (drawn.source, drawn.image_url) == ("avatar", "https://m/x.png")
    assert drawn.changed == ("image_url", "avatar_status")


async def test_the_avatar_sagas_versions_are_recorded_as_decided_by_the_avatar(
    settings: Settings,
) -> None:
    quiet = replace(settings, video="off")
    async with start_server(quiet, stages=[history_stage, avatar_stage]) as live:
        async with live.http() as client:
            await commit(client, "alice", state="stressed", mood="anxious", energy=35)
        await live.services.parts[SAGA].idle()
        recorded = await events(live, "alice")

    assert [(e.version, e.cause, e.source) for e in recorded] == [
        (1, "demo", "manual"),
        (2, "avatar", "avatar"),
        (3, "avatar", "avatar"),
    ]
    assert recorded[1].changed == ("avatar_status",)
    assert recorded[2].image_url is not None and recorded[2].image_url.endswith(".png")
    assert all(e.state == "stressed" for e in recorded)


async def test_a_store_that_keeps_failing_is_counted_and_logged_as_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SQLiteStore(tmp_path / "closed.sqlite3")  # never opened: every call fails
    metrics = Metrics()
    waits: list[float] = []
    recorder = HistoryRecorder(store, metrics, retry=instant(Backoff(attempts=3), record=waits))
    event = event_of(UserState.initial("alice"), UserState("alice", version=1), "demo")

    with caplog.at_level(logging.INFO):
        assert await recorder.record(event) is False

    assert len(waits) == 2  # three attempts, two pauses between them
    assert counted(metrics, "failed") == 1
    warnings = [r for r in caplog.records if r.name == "server.history"]
    assert [r.levelname for r in warnings] == ["WARNING"]
    assert "alice" not in warnings[0].getMessage()
    assert all(r.exc_info is None for r in caplog.records)


async def test_a_repeated_event_is_counted_as_skipped(history_server: LiveServer) -> None:
    services = history_server.services
    committed = await services.state.update("alice", change(mood="happy"), cause="demo")
    recorder = services.parts[HISTORY]
    event = event_of(UserState.initial("alice"), committed, "demo")

    assert await recorder.record(event) is False

    assert counted(services.metrics, "recorded") == 1
    assert counted(services.metrics, "skipped") == 1
    assert len(await events(history_server, "alice")) == 1


async def test_sqlite_purge_deletes_events_past_their_retention_only(
    settings: Settings, clock: Clock
) -> None:
    short = replace(settings, history_retention_days=2)
    store = SQLiteStore(short.sqlite_path, history_retention_days=2)
    async with start_server(short, store=store, stages=[history_stage], clock=clock) as live:
        state = live.services.state
        await state.update("alice", change(mood="happy"), cause="demo")
        clock.advance(86_400)
        await state.update("alice", change(mood="tired"), cause="demo")
        clock.advance(86_400 + 60)  # the first event is now past its two days

        assert await purge_once(live.services) == 1
        assert [e.version for e in await events(live, "alice")] == [2]
        assert await purge_once(live.services) == 0


async def test_the_route_reads_from_the_events_not_the_state(history_server: LiveServer) -> None:
    """The read model answers from its own records: a version committed without a
    recorder (before the history existed) has no event."""
    services = history_server.services
    listeners: list[Any] = services.state.listeners
    saved = list(listeners)
    listeners.clear()
    await services.state.update("alice", change(mood="happy"), cause="demo")
    listeners.extend(saved)
    await services.state.update("alice", change(mood="tired"), cause="demo")

    async with history_server.http() as client:
        page = (await client.get("/v1/users/alice/history", headers=auth("alice"))).json()

    assert [e["version"] for e in page["events"]] == [2]


def test_a_feature_summary_keeps_the_values_an_analysis_saw_rounded() -> None:
    now = 1_764_547_200_000
    frames = [Frame(ts=now - i * 30_000, hr=80.0 + i / 3, hrv=41.0, steps=0) for i in range(20)]
    features = compute_features(frames, now_ms=now, baseline=None)

    summary = summarize_features(features)

    assert "now_ms" not in summary
    assert summary["count"] == 20
    assert summary["hrv_mean"] == 41.0
    assert summary["hr_mean"] == round(features.hr_mean or 0, 2)
    assert all(v is not None for v in summary.values())
    assert all(len(str(v).partition(".")[2]) <= 2 for v in summary.values() if isinstance(v, float))
    assert Provenance(features=summary).bounded().features == dict(sorted(summary.items()))
