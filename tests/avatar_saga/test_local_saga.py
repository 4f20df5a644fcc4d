"""The saga with the embedded defaults (local renderer, local media), end to end, and the
``companion avatars retry-failed`` command."""

from __future__ import annotations

import asyncio
import io
from dataclasses import replace
from urllib.parse import urlsplit

import pytest
from PIL import Image

from brain.model import Profile
from server.avatar.saga import Target, conditional, starts_saga
from server.avatar.stage import avatar_stage
from server.avatar.stills import watch_key
from server.cli import main
from server.settings import Settings
from server.store.base import UserState
from server.store.sqlite import SQLiteStore
from tests.avatar_saga.conftest import post_state, saga_of, status_delta
from tests.conftest import start_server


async def test_local_renderer_end_to_end_serves_the_image_from_media(settings: Settings) -> None:
    """State change → ready delta at the watch → the URL serves a 512 px PNG, immutable."""
    async with start_server(settings, stages=[avatar_stage]) as live:
        watch = await live.connect("fay", "watch")
        async with live.http() as http:
            await post_state(http, "fay", state="exercising", mood="energized")
            ready = await status_delta(watch, "ready")
            path = urlsplit(ready["image_url"]).path
            phone = await http.get(path)
            small = await http.get(watch_key(path))
            again = await http.get(path, headers={"If-None-Match": phone.headers["etag"]})
            missing = await http.get("/media/avatars/nothing.png")
        await saga_of(live).idle()
        await watch.close()
    assert path.startswith("/media/avatars/")
    assert phone.status_code == 200
    assert phone.headers["content-type"] == "image/png"
    assert phone.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert phone.headers["x-content-type-options"] == "nosniff"
    assert again.status_code == 304
    assert missing.status_code == 404
    with Image.open(io.BytesIO(phone.content)) as image:
        assert (image.format, image.size) == ("PNG", (512, 512))
    with Image.open(io.BytesIO(small.content)) as image:
        assert image.size == (192, 192)


async def test_media_route_is_404_without_a_local_media_store(settings: Settings) -> None:
    """Without the avatar stage (or with S3 media) the server serves no media."""
    async with start_server(settings) as live, live.http() as http:
        response = await http.get("/media/avatars/x.png")
    assert response.status_code == 404


def seed_state(settings: Settings, state: UserState) -> None:
    """Write ``state`` as the first version of its user, straight into the SQLite file."""

    async def seed() -> None:
        store = SQLiteStore(settings.sqlite_path)
        await store.open()
        await store.put_state(state.rehashed(), 0)
        await store.close()

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(seed())


def read_state(settings: Settings, user_id: str) -> UserState | None:
    async def read() -> UserState | None:
        store = SQLiteStore(settings.sqlite_path)
        await store.open()
        try:
            return await store.get_state(user_id)
        finally:
            await store.close()

    return asyncio.run(read())


def test_retry_failed_command_regenerates_in_process(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`companion avatars retry-failed` finds failed users in the store and makes them ready."""
    failed = UserState("gus", version=1, state="stressed", mood="anxious", avatar_status="failed")
    seed_state(settings, failed)
    monkeypatch.setenv("COMPANION_DATA_DIR", str(settings.data_dir))
    assert main(["avatars", "retry-failed"]) == 0
    out = capsys.readouterr().out
    state = read_state(settings, "gus")
    assert state is not None and state.avatar_status == "ready" and state.image_url
    assert state.video_status == "ready" and state.video_url
    assert out.strip() == f"gus: ready {state.image_url} clip {state.video_url}"
    assert main(["avatars", "retry-failed"]) == 0
    assert capsys.readouterr().out.strip() == "no users to retry"


def test_retry_failed_exits_1_when_a_saga_fails_again(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A repeat failure (the status was failed already) is a failure, not 'stale': exit 1."""
    owl = Profile(base_avatar="owl")  # no such base avatar: the local renderer fails on it
    failed = UserState(
        "hal", version=1, state="stressed", mood="anxious", avatar_status="failed", profile=owl
    )
    seed_state(settings, failed)
    monkeypatch.setenv("COMPANION_DATA_DIR", str(settings.data_dir))
    assert main(["avatars", "retry-failed"]) == 1
    assert capsys.readouterr().out.strip() == "hal: failed"
    state = read_state(settings, "hal")
    assert state is not None and state.avatar_status == "failed"


def test_retry_failed_interrupted_also_resumes_sagas_a_stop_left_generating(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    left = UserState("hal", version=1, state="calm", mood="content", avatar_status="generating")
    seed_state(settings, left)
    monkeypatch.setenv("COMPANION_DATA_DIR", str(settings.data_dir))
    assert main(["avatars", "retry-failed"]) == 0  # without the flag: left alone
    assert capsys.readouterr().out.strip() == "no users to retry"
    stuck = read_state(settings, "hal")
    assert stuck is not None and stuck.avatar_status == "generating"
    assert main(["avatars", "retry-failed", "--interrupted"]) == 0
    state = read_state(settings, "hal")
    assert state is not None and state.avatar_status == "ready" and state.image_url
    assert capsys.readouterr().out.strip() == f"hal: ready {state.image_url} clip {state.video_url}"


def test_only_a_change_of_state_mood_or_band_starts_a_saga() -> None:
    base = UserState("u", state="calm", mood="content", energy=70)
    assert not starts_saga(base, UserState("u", state="calm", mood="content", energy=90), "demo")
    assert starts_saga(base, UserState("u", state="calm", mood="content", energy=40), "demo")
    assert starts_saga(base, UserState("u", state="stressed", mood="content", energy=70), "x")
    assert not starts_saga(base, UserState("u", state="stressed", energy=70), "avatar")
    assert not starts_saga(base, UserState("u", reasoning="new", profile=Profile()), "demo")


def test_watch_key_adds_a_suffix_before_the_extension() -> None:
    assert watch_key("avatars/ab12.png") == "avatars/ab12-watch.png"
    assert watch_key("avatars/ab12") == "avatars/ab12-watch"


def test_conditional_commit_applies_only_to_the_same_target() -> None:
    made_for = UserState("u", state="stressed", mood="anxious", energy=50)
    decide = conditional(Target.of(made_for), {"image_url": "/m/a.png", "avatar_status": "ready"})
    assert decide(made_for) == {"image_url": "/m/a.png", "avatar_status": "ready"}
    assert decide(UserState("u", state="resting", mood="anxious", energy=50)) is None
    assert decide(UserState("u", state="stressed", mood="anxious", energy=10)) is None
    done = UserState("u", state="stressed", mood="anxious", energy=50, image_url="/m/a.png")
    assert decide(replace(done, avatar_status="ready")) is None
