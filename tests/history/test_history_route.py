"""``GET /v1/users/{id}/history``, the export and the erase, on a live server over each store."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import httpx
from jsonschema import Draft202012Validator

from server import provenance
from server.provenance import Provenance
from server.store.history_codec import EVENT_FIELDS
from tests.conftest import LiveServer, auth
from tests.history.conftest import Clock
from tests.server.conftest import commit, errors_in


async def history(
    client: httpx.AsyncClient, user: str, device: str = "phone", **params: Any
) -> dict[str, Any]:
    response = await client.get(
        f"/v1/users/{user}/history", params=params, headers=auth(user, device)
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def versions(page: dict[str, Any]) -> list[int]:
    return [event["version"] for event in page["events"]]


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


async def test_every_commit_is_an_event_newest_first_saying_who_decided_and_why(
    history_server: LiveServer,
) -> None:
    async with history_server.http() as client:
        await commit(
            client,
            "alice",
            state="stressed",
            mood="anxious",
            energy=35,
            reasoning="HR up 20 bpm with no steps",
            actions=["breathing_session"],
        )
        await commit(client, "alice", state="calm", mood="content", reasoning="settled")
        await commit(client, "bob", mood="happy")
        page = await history(client, "alice", "watch")

    assert page["user_id"] == "alice"
    assert page["next_before"] is None
    newest, oldest = page["events"]
    assert list(newest) == list(EVENT_FIELDS)
    assert (newest["version"], newest["state"], newest["mood"]) == (2, "calm", "content")
    assert newest["changed"] == ["state", "mood", "reasoning"]
    assert oldest == {
        "version": 1,
        "at": oldest["at"],
        "cause": "demo",
        "source": "manual",
        "state": "stressed",
        "mood": "anxious",
        "energy": 35,
        "reasoning": "HR up 20 bpm with no steps",
        "actions": ["breathing_session"],
        "image_url": None,
        "video_url": None,
        "changed": ["state", "mood", "energy", "reasoning", "actions", "source"],
        "model": None,
        "cost_usd": None,
        "features": None,
        "fallback": None,
    }
    assert oldest["at"] <= newest["at"]


async def test_pages_follow_next_before_down_to_the_first_version(
    history_server: LiveServer,
) -> None:
    async with history_server.http() as client:
        for energy in range(10, 80, 10):  # seven versions
            await commit(client, "alice", energy=energy, reasoning=f"energy {energy}")
        first = await history(client, "alice", limit=3)
        second = await history(client, "alice", limit=3, before=first["next_before"])
        third = await history(client, "alice", limit=3, before=second["next_before"])
        newer = await history(client, "alice", since=5)
        default = await history(client, "alice", "debug")

    assert (versions(first), first["next_before"]) == ([7, 6, 5], 5)
    assert (versions(second), second["next_before"]) == ([4, 3, 2], 2)
    assert (versions(third), third["next_before"]) == ([1], None)
    assert versions(newer) == [7, 6]
    assert versions(default) == [7, 6, 5, 4, 3, 2, 1]


async def test_before_and_since_take_times_and_give_the_state_at_a_moment(
    history_server: LiveServer, clock: Clock
) -> None:
    start = clock()
    async with history_server.http() as client:
        await commit(client, "alice", state="calm", reasoning="morning")
        clock.advance(1200)
        await commit(client, "alice", state="stressed", reasoning="meeting at 15:00")
        clock.advance(1200)
        await commit(client, "alice", state="exercising", reasoning="run")
        during_meeting = await history(client, "alice", before=iso(start + 1800), limit=1)
        since_then = await history(client, "alice", since=iso(start + 600))
        offset = await history(
            client, "alice", before=iso(start + 1800).replace("Z", "+00:00"), limit=1
        )

    assert [(e["version"], e["state"]) for e in during_meeting["events"]] == [(2, "stressed")]
    assert during_meeting["next_before"] == 2
    assert versions(since_then) == [3, 2]
    assert offset["events"] == during_meeting["events"]


async def test_history_is_for_the_users_devices_and_services_only(
    history_server: LiveServer,
) -> None:
    callers = {
        ("alice", "phone"): 200,
        ("alice", "watch"): 200,
        ("alice", "debug"): 200,
        ("ops", "service"): 200,
        ("bob", "phone"): 403,  # another user's
        ("alice", "operator"): 403,  # fleet figures only, never a user's data
    }
    async with history_server.http() as client:
        await commit(client, "alice", mood="happy")
        answers = {
            caller: await client.get("/v1/users/alice/history", headers=auth(*caller))
            for caller in callers
        }
        anonymous = await client.get("/v1/users/alice/history")

    assert {caller: a.status_code for caller, a in answers.items()} == callers
    assert all(versions(a.json()) == [1] for a in answers.values() if a.status_code == 200)
    assert anonymous.status_code == 401


async def test_bad_parameters_are_400_problems_and_log_no_error(
    history_server: LiveServer, server_log: list[logging.LogRecord]
) -> None:
    bad = [
        {"limit": "0"},
        {"limit": "101"},
        {"limit": "ten"},
        {"before": "yesterday"},
        {"before": "2026-11-30T15:00:00"},  # no zone
        {"since": "9" * 19},
        {"since": ""},
        {"before": "-3"},
        {"since": "٣"},  # a digit, but not an ASCII one
    ]
    async with history_server.http() as client:
        answers = [
            await client.get("/v1/users/alice/history", params=params, headers=auth("alice"))
            for params in bad
        ]

    assert [a.status_code for a in answers] == [400] * len(bad)
    assert all(a.headers["content-type"] == "application/problem+json" for a in answers)
    assert errors_in(server_log) == []


async def test_export_holds_the_history_and_the_erase_deletes_it(
    history_server: LiveServer,
) -> None:
    async with history_server.http() as client:
        await commit(client, "alice", mood="happy", reasoning="first")
        await commit(client, "alice", mood="tired", reasoning="second")
        await commit(client, "bob", mood="happy")
        exported = (await client.get("/v1/users/alice/export", headers=auth("alice"))).json()
        erased = await client.delete("/v1/users/alice", headers=auth("alice"))
        after = (await client.get("/v1/users/alice/export", headers=auth("alice"))).json()
        emptied = await history(client, "alice")
        bobs = await history(client, "bob")

    assert [(e["version"], e["reasoning"]) for e in exported["history"]] == [
        (1, "first"),
        (2, "second"),
    ]
    assert erased.json() == {"user_id": "alice", "deleted": 1 + 2}  # state, two events
    assert after["history"] == []
    assert emptied == {"user_id": "alice", "events": [], "next_before": None}
    assert versions(bobs) == [1]


async def test_a_page_with_every_field_set_keeps_the_openapi_schema(
    history_server: LiveServer,
) -> None:
    state = history_server.services.state
    with provenance.attach(
        Provenance(model="claude-haiku-4-5", cost_usd=0.001, features={"hr": 90.0}, fallback=None),
        cause="analysis",
    ):
        await state.update(
            "alice",
            lambda current: {"state": "stressed", "image_url": "https://m/x.png"},
            cause="analysis",
        )
    async with history_server.http() as client:
        document = (await client.get("/openapi.json")).json()
        page = await history(client, "alice")

    schemas = document["components"]["schemas"]
    assert list(schemas["HistoryEvent"]["properties"]) == list(EVENT_FIELDS)
    validator = Draft202012Validator(
        {"$ref": "#/components/schemas/HistoryPage", "components": document["components"]}
    )
    assert list(validator.iter_errors(page)) == []
    assert page["events"][0]["model"] == "claude-haiku-4-5"
