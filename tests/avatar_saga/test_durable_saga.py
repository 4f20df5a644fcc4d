"""The durable saga: a generation in flight survives a kill of its server, an expired lease
hands a saga to another node (once), and a saga that keeps failing lands in the dead-letter
list that ``companion avatars failed`` prints and ``retry-failed`` drains."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from brain.avatar import AvatarSpec, build_prompt, cache_hash
from brain.backoff import Backoff
from server.avatar.durable import node_name, reason_of
from server.avatar.stage import avatar_stage, avatar_stage_with
from server.cli import main
from server.settings import Settings
from server.store.base import SagaRecord, UserState
from server.store.sqlite import SQLiteStore
from tests.avatar_saga.conftest import API_KEY, ATTEMPTS, post_state, saga_of, status_delta
from tests.clients.conftest import READY_LINE, Child, free_port, spawn  # noqa: F401  (fixture)
from tests.conftest import LiveServer, auth, recv_op, send, start_server
from tests.fakes.gemini_api import FakeGeminiApi

STRESSED = {"state": "stressed", "mood": "anxious"}
LEASE_S = 60.0


async def rest_state_when(http: httpx.AsyncClient, user: str, status: str) -> dict[str, Any]:
    """The user's state once its ``avatar_status`` is ``status``, long-polling the REST
    route with the ETag (the server answers when the state changes); 30 s at most."""
    etag: str | None = None
    async with asyncio.timeout(30):
        while True:
            headers = auth(user, "watch")
            if etag is not None:
                headers["If-None-Match"] = etag
            params = {"wait": "10"} if etag is not None else {}
            response = await http.get(f"/v1/users/{user}/state", params=params, headers=headers)
            if response.status_code == 200:
                body: dict[str, Any] = response.json()
                if body["avatar_status"] == status:
                    return body
                etag = response.headers["etag"]


async def ws_status_when(live: LiveServer, user: str, status: str) -> None:
    """Return once the user's ``avatar_status`` is ``status``: in the snapshot of a new
    watch connection, or in a delta after it."""
    watch = await live.connect(user, "watch", hello=False)
    try:
        await send(watch, {"op": "hello", "client": "test"})
        snapshot = await recv_op(watch, "snapshot")
        if snapshot["avatar_status"] != status:
            await status_delta(watch, status)
    finally:
        await watch.close()


def key_of(user: UserState) -> str:
    spec = AvatarSpec.of(user.state, user.mood, user.energy, user.profile.base_avatar)
    return cache_hash(build_prompt(spec), spec.base_avatar.value)


async def seed(settings: Settings, *states: UserState, records: tuple[SagaRecord, ...]) -> None:
    """Write states (first versions) and saga records into the settings' SQLite file, as a
    node that stopped mid-saga leaves them."""
    store = SQLiteStore(settings.sqlite_path)
    await store.open()
    try:
        for state in states:
            await store.put_state(state.rehashed(), 0)
        for record in records:
            await store.put_saga(record)
    finally:
        await store.close()


@pytest.mark.slow
async def test_a_server_killed_mid_generation_finishes_the_saga_by_itself_after_restart(
    fake_gemini: FakeGeminiApi,
    spawn: Callable[..., Any],  # noqa: F811  (the fixture imported above)
    tmp_path: Any,
) -> None:
    """SIGKILL while Gemini holds the request; on restart the node finds its own saga and
    generates again, without any command: the avatar is ready, no record or letter left."""
    fake_gemini.hang()
    port = free_port()
    env = {
        "COMPANION_AVATAR": "gemini",
        "COMPANION_VIDEO": "off",
        "GEMINI_API_KEY": API_KEY,
        "GOOGLE_GEMINI_BASE_URL": fake_gemini.base_url,
    }

    async def serve() -> Child:
        child: Child = await spawn(
            "server", "serve", "--host", "127.0.0.1", "--port", str(port), extra_env=env
        )
        await child.expect(re.escape(READY_LINE), limit_s=30)
        return child

    first = await serve()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
        await post_state(http, "kim", **STRESSED)
        assert await asyncio.to_thread(fake_gemini.hung.wait, 20)
        await first.kill()

        second = await serve()
        await second.expect("resuming the avatar saga of kim, start 2")

        state = await rest_state_when(http, "kim", "ready")
        image = await http.get(httpx.URL(state["image_url"]).path)
    await second.stop()  # graceful: the saga's last step (ending its record) is done
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert fake_gemini.calls == 2
    store = SQLiteStore(Settings(data_dir=tmp_path / "data").sqlite_path)
    await store.open()
    try:
        assert await store.resumable_sagas("anyone", now_ms=2**62) == []
        assert await store.dead_letters() == []
    finally:
        await store.close()
    assert not [line for line in first.lines + second.lines if "Traceback" in line]


async def test_another_nodes_saga_is_resumed_once_its_lease_ended_and_not_before(
    settings: Settings,
) -> None:
    """Two sagas a dead node left: the one whose lease ended is resumed at start; the other
    only once the (injected) clock passes its lease; a second claim finds nothing."""
    now = [time.time()]
    ann = UserState("ann", version=1, state="stressed", mood="anxious", avatar_status="generating")
    bob = UserState("bob", version=1, state="resting", mood="tired", avatar_status="generating")
    now_ms = int(now[0] * 1000)
    expired = SagaRecord("ann", "s-ann", key_of(ann), "dead-node:8000", now_ms - 120_000, now_ms)
    holding = SagaRecord("bob", "s-bob", key_of(bob), "dead-node:8000", now_ms, now_ms + 60_000)
    await seed(settings, ann, bob, records=(expired, holding))
    async with start_server(settings, stages=[avatar_stage], clock=lambda: now[0]) as live:
        saga, state = saga_of(live), live.services.state

        await ws_status_when(live, "ann", "ready")
        await saga.idle()
        assert await saga.resume_interrupted() == []
        assert (await state.current("bob")).avatar_status == "generating"

        now[0] += 61
        resumed = await saga.resume_interrupted()
        assert [(await task).status for task in resumed] == ["ready"]
        assert await saga.resume_interrupted() == []
        bob_now = await state.current("bob")
        store = live.services.store
        assert await store.resumable_sagas(node_name(0), now_ms=2**62) == []
    assert bob_now.avatar_status == "ready" and bob_now.image_url


async def test_a_saga_interrupted_too_often_is_dead_lettered_not_resumed(
    settings: Settings,
) -> None:
    """A record already started three times: the fourth start gives up, failed + letter."""
    cal = UserState("cal", version=1, state="stressed", mood="anxious", avatar_status="generating")
    started = int(time.time() * 1000) - 600_000
    worn = SagaRecord("cal", "s-cal", key_of(cal), "dead:1", started, started, attempts=3)
    await seed(settings, cal, records=(worn,))
    async with start_server(settings, stages=[avatar_stage]) as live:
        store, state = live.services.store, live.services.state

        await ws_status_when(live, "cal", "failed")
        await saga_of(live).idle()
        (letter,) = await store.dead_letters()
        final = await state.current("cal")
    assert final.avatar_status == "failed"
    assert (letter.user_id, letter.reason, letter.attempts) == ("cal", "interrupted 3 times", 4)
    assert letter.cache_hash == key_of(cal)


async def test_a_generation_that_always_fails_lands_in_the_dead_letter_list_with_its_reason(
    gemini_settings: Settings,
    fake_gemini: FakeGeminiApi,
    retry: Backoff,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """503 on every try: failed, one dead letter (reason, time, prompt hash) that
    ``companion avatars failed`` prints; ``retry-failed`` drains it once Gemini is back."""
    fake_gemini.fail(503, times=ATTEMPTS)
    before = int(time.time() * 1000)
    async with start_server(gemini_settings, stages=[avatar_stage_with(retry=retry)]) as live:
        watch = await live.connect("dee", "watch")
        async with live.http() as http:
            await post_state(http, "dee", **STRESSED)
            await status_delta(watch, "failed")
        await saga_of(live).idle()
        await watch.close()
        store = live.services.store
        (letter,) = await store.dead_letters()
        failed = await live.services.state.current("dee")
        assert await store.resumable_sagas(node_name(0), now_ms=2**62) == []
    assert letter.user_id == "dee" and (letter.state, letter.mood) == ("stressed", "anxious")
    assert letter.reason.startswith("GenerationError") and "503" in letter.reason
    assert before <= letter.failed_at <= int(time.time() * 1000)
    assert letter.cache_hash == key_of(failed)

    monkeypatch.setenv("COMPANION_DATA_DIR", str(gemini_settings.data_dir))
    monkeypatch.setenv("COMPANION_AVATAR", "gemini")
    monkeypatch.setenv("COMPANION_VIDEO", "off")
    assert await asyncio.to_thread(main, ["avatars", "failed"]) == 0
    (line,) = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ dee stressed/anxious prompt [0-9a-f]{12} starts 1:"
        r" GenerationError: .*503.*",
        line,
    ), line
    assert await asyncio.to_thread(main, ["avatars", "retry-failed"]) == 0
    assert capsys.readouterr().out.startswith("dee: ready")
    assert await asyncio.to_thread(main, ["avatars", "failed"]) == 0
    assert capsys.readouterr().out.strip() == "no dead letters"


def test_a_reason_is_one_bounded_line() -> None:
    """A multi-line, long error message becomes one line of at most 300 characters."""
    reason = reason_of(RuntimeError("first\nsecond " + "x" * 500))
    assert reason.startswith("RuntimeError: first second x") and len(reason) == 300
    assert reason_of(TimeoutError()) == "TimeoutError"
