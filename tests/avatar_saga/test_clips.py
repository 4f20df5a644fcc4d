"""Avatar clips end to end on a live server: the image first, the clip in a second delta;
Pillow clips by default, Veo clips through the real SDK against the fake Vertex API; a failed
clip never fails its image; and the cache rollback switch."""

from __future__ import annotations

import asyncio
import base64
import io
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image

from brain.avatar import AvatarSpec, build_prompt, cache_hash
from brain.backoff import Backoff
from server.avatar.stage import avatar_stage, avatar_stage_with
from server.settings import Settings
from tests.avatar.test_media import REGION, bucket, moto_endpoint  # noqa: F401  (fixtures)
from tests.avatar_saga.conftest import (
    ATTEMPTS,
    delta_with,
    post_state,
    saga_of,
    status_delta,
)
from tests.conftest import LiveServer, auth, recv, send, start_server
from tests.fakes.gemini_api import FakeGeminiApi
from tests.fakes.vertex_api import FakeVertexApi, sample_mp4

STRESSED = {"state": "stressed", "mood": "anxious"}
RESTING = {"state": "resting", "mood": "tired"}
IMMUTABLE = "public, max-age=31536000, immutable"


def key_of(state: str, mood: str, energy: int = 70, base: str = "fox") -> str:
    spec = AvatarSpec.of(state, mood, energy, base)
    return cache_hash(build_prompt(spec), base)


async def fetch(http: httpx.AsyncClient, url: str) -> httpx.Response:
    return await http.get(urlsplit(url).path)


async def snapshot_of(live: LiveServer, user: str) -> dict[str, Any]:
    ws = await live.connect(user, "watch", hello=False)
    try:
        await send(ws, {"op": "hello", "client": "test"})
        return await recv(ws)
    finally:
        await ws.close()


async def test_the_image_is_pushed_first_then_its_clip_in_a_second_delta(
    settings: Settings,
) -> None:
    """Default (local) clips: ready image delta (clip coming), then a delta with the clip;
    the clip is a 256 px WebP served from /media; both URLs sit in one cache entry and in
    the snapshot, the REST state and the legacy state (not the seeds' current-state)."""
    async with start_server(settings, stages=[avatar_stage]) as live:
        watch = await live.connect("fay", "watch")
        async with live.http() as http:
            await post_state(http, "fay", state="exercising", mood="energized")
            image = await status_delta(watch, "ready")
            clip = await delta_with(watch, "video_url")
            served = await fetch(http, clip["video_url"])
            legacy = await http.get("/api/v1/user/fay/state", headers=auth("fay", "watch"))
            seed = await http.get("/avatar/current-state/fay", headers=auth("fay", "watch"))
            rest = await http.get("/v1/users/fay/state", headers=auth("fay", "watch"))
        snapshot = await snapshot_of(live, "fay")
        await saga_of(live).idle()
        await watch.close()
        entry = await live.services.store.get_avatar(key_of("exercising", "energized"))
    assert image["video_status"] == "generating" and "video_url" not in image
    assert clip == {"video_url": clip["video_url"], "video_status": "ready"}
    assert clip["video_url"].endswith(".webp")
    assert served.status_code == 200
    assert served.headers["content-type"] == "image/webp"
    assert served.headers["cache-control"] == IMMUTABLE
    with Image.open(io.BytesIO(served.content)) as webp:
        assert (webp.format, webp.size, webp.n_frames) == ("WEBP", (256, 256), 12)
    assert entry is not None
    assert (entry.image_url, entry.video_url) == (image["image_url"], clip["video_url"])
    assert (snapshot["video_url"], snapshot["video_status"]) == (clip["video_url"], "ready")
    assert legacy.json()["video_url"] == clip["video_url"]
    assert set(seed.json()) == {"state_hash", "timestamp", "image_url", "mood"}  # as deployed
    assert rest.json()["video_url"] == clip["video_url"]


async def test_a_cache_hit_pushes_image_and_clip_in_one_delta_without_a_new_clip(
    settings: Settings,
) -> None:
    async with start_server(settings, stages=[avatar_stage]) as live:
        ann, bob = await live.connect("ann", "watch"), await live.connect("bob", "watch")
        async with live.http() as http:
            await post_state(http, "ann", **STRESSED)
            first = await delta_with(ann, "video_url")
            await post_state(http, "bob", **STRESSED)
            hit = await status_delta(bob, "ready")
        await saga_of(live).idle()
        await ann.close()
        await bob.close()
        metrics = live.services.metrics
    assert hit["video_url"] == first["video_url"] and hit["video_status"] == "ready"
    assert metrics.avatar_clips.labels("ok")._value.get() == 1
    assert metrics.avatar_cache.labels("hit")._value.get() == 1


async def test_with_clips_off_no_clip_is_made_and_the_state_says_none(
    settings: Settings,
) -> None:
    async with start_server(replace(settings, video="off"), stages=[avatar_stage]) as live:
        watch = await live.connect("gil", "watch")
        async with live.http() as http:
            await post_state(http, "gil", **STRESSED)
            await status_delta(watch, "ready")
        await saga_of(live).idle()
        await watch.close()
        state = await live.services.state.current("gil")
        metrics = live.services.metrics
    assert (state.avatar_status, state.video_url, state.video_status) == ("ready", None, "none")
    assert metrics.avatar_clips.labels("ok")._value.get() == 0
    assert not list(settings.media_dir.rglob("*.webp"))


async def test_a_cached_image_from_before_clips_gets_its_clip_on_the_next_hit(
    settings: Settings,
) -> None:
    """Images cached while clips were off get a clip when clips are turned on."""
    async with start_server(replace(settings, video="off"), stages=[avatar_stage]) as live:
        async with live.http() as http:
            await post_state(http, "hal", **STRESSED)
            await saga_of(live).idle()
    async with start_server(settings, stages=[avatar_stage]) as live:
        watch = await live.connect("ivy", "watch")
        async with live.http() as http:
            await post_state(http, "ivy", **STRESSED)
            hit = await status_delta(watch, "ready")
            clip = await delta_with(watch, "video_url")
        await saga_of(live).idle()
        await watch.close()
        entry = await live.services.store.get_avatar(key_of("stressed", "anxious"))
    assert hit["video_status"] == "generating"
    assert entry is not None and entry.video_url == clip["video_url"]
    assert live.services.metrics.avatar_cache.labels("hit")._value.get() == 1


async def test_veo_clip_is_made_from_the_still_and_served_as_mp4(
    veo_settings: Settings, fake_vertex: FakeVertexApi, clip_backoff: Backoff
) -> None:
    stage = avatar_stage_with(clip_backoff=clip_backoff)
    async with start_server(veo_settings, stages=[stage]) as live:
        watch = await live.connect("jo", "watch")
        async with live.http() as http:
            await post_state(http, "jo", **STRESSED)
            image = await status_delta(watch, "ready")
            clip = await delta_with(watch, "video_url")
            served = await fetch(http, clip["video_url"])
            still = await fetch(http, image["image_url"])
        await saga_of(live).idle()
        await watch.close()
    submit = fake_vertex.submitted()[0].body["instances"][0]
    assert clip["video_status"] == "ready" and clip["video_url"].endswith(".mp4")
    assert served.headers["content-type"] == "video/mp4"
    assert served.content == sample_mp4(submit["prompt"])
    assert base64.b64decode(submit["image"]["bytesBase64Encoded"]) == still.content
    assert fake_vertex.submits == 1


async def test_the_image_never_waits_for_the_clip(
    veo_settings: Settings, fake_vertex: FakeVertexApi, clip_backoff: Backoff
) -> None:
    """With Veo held, the image is committed and pushed; the clip follows on release."""
    fake_vertex.hang()
    stage = avatar_stage_with(clip_backoff=clip_backoff)
    async with start_server(veo_settings, stages=[stage]) as live:
        watch = await live.connect("kim", "watch")
        async with live.http() as http:
            await post_state(http, "kim", **STRESSED)
            image = await status_delta(watch, "ready")
            assert await asyncio.to_thread(fake_vertex.hung.wait, 10)
            held = await live.services.state.current("kim")
            fake_vertex.release()
            clip = await delta_with(watch, "video_url")
        await saga_of(live).idle()
        await watch.close()
    assert image["image_url"] and image["video_status"] == "generating"
    assert (held.avatar_status, held.video_url, held.video_status) == ("ready", None, "generating")
    assert clip["video_url"].endswith(".mp4")


async def test_a_clip_finishing_after_a_newer_image_never_replaces_its_clip(
    veo_settings: Settings, fake_vertex: FakeVertexApi, clip_backoff: Backoff
) -> None:
    fake_vertex.hang()  # the first clip only
    stage = avatar_stage_with(clip_backoff=clip_backoff)
    async with start_server(veo_settings, stages=[stage]) as live:
        watch = await live.connect("lou", "watch")
        async with live.http() as http:
            await post_state(http, "lou", **STRESSED)
            await status_delta(watch, "ready")
            assert await asyncio.to_thread(fake_vertex.hung.wait, 10)
            await post_state(http, "lou", **RESTING)
            newer = await status_delta(watch, "ready")
            newer_clip = await delta_with(watch, "video_url")
            fake_vertex.release()
            await saga_of(live).idle()
        await watch.close()
        final = await live.services.state.current("lou")
        older = await live.services.store.get_avatar(key_of("stressed", "anxious"))
    assert older is not None and older.video_url  # the late clip was made and cached …
    assert final.image_url == newer["image_url"]  # … but never shown with the newer image
    assert final.video_url == newer_clip["video_url"] != older.video_url
    assert fake_vertex.submits == 2


async def test_a_filtered_clip_fails_alone_and_is_not_paid_for_again(
    veo_settings: Settings, fake_vertex: FakeVertexApi, clip_backoff: Backoff
) -> None:
    """The image stays ready; video_status=failed; a later hit of the same avatar does not
    call Veo again."""
    fake_vertex.filter()
    stage = avatar_stage_with(clip_backoff=clip_backoff)
    async with start_server(veo_settings, stages=[stage]) as live:
        ann, bob = await live.connect("ann", "watch"), await live.connect("bob", "watch")
        async with live.http() as http:
            await post_state(http, "ann", **STRESSED)
            image = await status_delta(ann, "ready")
            failed = await delta_with(ann, "video_status")
            while failed["video_status"] != "failed":
                failed = await delta_with(ann, "video_status")
            await post_state(http, "bob", **STRESSED)
            hit = await status_delta(bob, "ready")
        await saga_of(live).idle()
        await ann.close()
        await bob.close()
        state = await live.services.state.current("ann")
        metrics = live.services.metrics
    assert (state.avatar_status, state.image_url) == ("ready", image["image_url"])
    assert (state.video_url, state.video_status) == (None, "failed")
    assert hit["video_status"] == "failed" and hit["image_url"] == image["image_url"]
    assert fake_vertex.submits == 1
    assert metrics.avatar_clip_failures._value.get() == 1
    assert metrics.avatar_failures._value.get() == 0


async def test_a_retryable_clip_error_is_retried_with_backoff_then_fails_alone(
    veo_settings: Settings,
    fake_vertex: FakeVertexApi,
    clip_backoff: Backoff,
    clip_backoffs: list[float],
) -> None:
    fake_vertex.fail_submit(503, times=ATTEMPTS)
    stage = avatar_stage_with(clip_backoff=clip_backoff)
    async with start_server(veo_settings, stages=[stage]) as live:
        watch = await live.connect("max", "watch")
        async with live.http() as http:
            await post_state(http, "max", **STRESSED)
            await status_delta(watch, "ready")
            await saga_of(live).idle()
        await watch.close()
        state = await live.services.state.current("max")
    assert (state.avatar_status, state.video_status) == ("ready", "failed")
    assert fake_vertex.submits == ATTEMPTS
    assert len(clip_backoffs) == ATTEMPTS - 1


async def test_with_the_cache_off_the_same_prompt_generates_twice(
    gemini_settings: Settings, fake_gemini: FakeGeminiApi, retry: Backoff
) -> None:
    """COMPANION_AVATAR_CACHE=off: no cache reads (two users, one prompt, two generations),
    yet the entry is still written."""
    settings = replace(gemini_settings, avatar_cache="off")
    async with start_server(settings, stages=[avatar_stage_with(retry=retry)]) as live:
        ann, bob = await live.connect("ann", "watch"), await live.connect("bob", "watch")
        async with live.http() as http:
            await post_state(http, "ann", **STRESSED)
            await status_delta(ann, "ready")
            await post_state(http, "bob", **STRESSED)
            await status_delta(bob, "ready")
        await saga_of(live).idle()
        await ann.close()
        await bob.close()
        entry = await live.services.store.get_avatar(key_of("stressed", "anxious"))
        metrics = live.services.metrics
    assert fake_gemini.calls == 2
    assert metrics.avatar_cache.labels("bypass")._value.get() == 2
    assert metrics.avatar_cache.labels("hit")._value.get() == 0
    assert entry is not None


async def test_with_s3_media_the_clip_is_stored_in_the_bucket(
    settings: Settings,
    moto_endpoint: str,  # noqa: F811
    bucket: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """COMPANION_MEDIA=s3://…: image and clip go to S3 (moto); the clip URL serves the WebP."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_endpoint)
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    s3_settings = replace(settings, media=f"s3://{bucket}/media")
    async with start_server(s3_settings, stages=[avatar_stage]) as live:
        watch = await live.connect("pam", "watch")
        async with live.http() as http:
            await post_state(http, "pam", **STRESSED)
            clip = await delta_with(watch, "video_url")
        await saga_of(live).idle()
        await watch.close()
    async with httpx.AsyncClient() as client:
        served = await client.get(clip["video_url"])
    assert urlsplit(clip["video_url"]).path.startswith(f"/{bucket}/media/avatars/")
    assert served.status_code == 200
    assert served.headers["content-type"] == "image/webp"
    assert served.headers["cache-control"] == IMMUTABLE
    assert served.content[:4] == b"RIFF" and served.content[8:12] == b"WEBP"
