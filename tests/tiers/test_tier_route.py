"""Setting a user's tier: PUT/GET /v1/users/{id}/tier on a live server, and
``companion users tier`` through that server and straight in the store."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from server.cli import main
from server.settings import Settings
from tests.conftest import SECRET, LiveServer, auth, start_server
from tests.server.conftest import commit

PATH = "/v1/users/alice/tier"


async def test_a_service_token_sets_the_tier_and_it_is_stored_with_the_profile(
    live_server: LiveServer,
) -> None:
    async with live_server.http() as client:
        before = await commit(client, "alice", state="calm")
        put = await client.put(PATH, json={"tier": "premium"}, headers=auth("alice", "service"))
        got = await client.get(PATH, headers=auth("alice"))
    assert put.status_code == 200
    assert put.json()["tier"] == "premium"
    assert put.json()["limits"]["avatar_generations_per_day"] == 48
    assert got.json()["tier"] == "premium"
    assert got.json()["cost_today"]["tier"] == "premium"
    stored = await live_server.services.store.get_state("alice")
    assert stored.profile.tier == "premium"
    assert stored.version == before["version"]  # nothing a device shows changed


async def test_the_persona_route_keeps_the_tier(live_server: LiveServer) -> None:
    service = auth("alice", "service")
    async with live_server.http() as client:
        await client.put(PATH, json={"tier": "premium"}, headers=service)
        await client.put("/v1/demo/users/alice/profile", json={"style": "strict"}, headers=service)
        got = await client.get(PATH, headers=service)
    assert got.json()["tier"] == "premium"


async def test_only_a_service_token_sets_a_tier_and_only_a_configured_one(
    live_server: LiveServer,
) -> None:
    service = auth("alice", "service")
    async with live_server.http() as client:
        by_phone = await client.put(PATH, json={"tier": "premium"}, headers=auth("alice"))
        unknown = await client.put(PATH, json={"tier": "gold"}, headers=service)
        extra = await client.put(PATH, json={"tier": "free", "x": 1}, headers=service)
        not_text = await client.put(PATH, json={"tier": 3}, headers=service)
        other_user = await client.get("/v1/users/bob/tier", headers=auth("alice"))
    assert by_phone.status_code == 403
    assert unknown.status_code == 422
    assert "free, premium" in unknown.json()["detail"]
    assert extra.status_code == 400
    assert not_text.status_code == 422
    assert other_user.status_code == 403


async def test_a_tier_added_by_the_setting_can_be_set(tmp_path: Path) -> None:
    from brain.tiers import parse_tiers

    settings = Settings(
        data_dir=tmp_path, secret=SECRET, tiers=parse_tiers('{"family": {"debounce_ms": 2000}}')
    )
    async with start_server(settings) as live, live.http() as client:
        put = await client.put(PATH, json={"tier": "family"}, headers=auth("alice", "service"))
    assert put.json()["limits"]["debounce_ms"] == 2000


async def test_the_command_sets_a_tier_through_a_running_server(
    live_server: LiveServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COMPANION_SECRET", SECRET)
    code = await asyncio.to_thread(
        main, ["users", "tier", "alice", "premium", "--server", live_server.url]
    )
    assert code == 0
    assert capsys.readouterr().out.strip() == "premium"
    assert (await live_server.services.store.get_state("alice")).profile.tier == "premium"


async def test_the_command_sets_a_tier_in_the_store_that_a_server_then_reads(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COMPANION_SECRET", SECRET)
    data_dir = str(settings.data_dir)
    assert (
        await asyncio.to_thread(main, ["users", "tier", "alice", "premium", "--data-dir", data_dir])
        == 0
    )
    assert await asyncio.to_thread(main, ["users", "tier", "alice", "--data-dir", data_dir]) == 0
    assert capsys.readouterr().out.split() == ["premium", "premium"]
    async with start_server(settings) as live, live.http() as client:
        got = await client.get(PATH, headers=auth("alice"))
    assert got.json()["tier"] == "premium"


def test_the_command_refuses_an_unknown_tier(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COMPANION_SECRET", SECRET)
    code = main(["users", "tier", "alice", "gold", "--data-dir", str(settings.data_dir)])
    assert code == 2
    assert "free, premium" in capsys.readouterr().err
