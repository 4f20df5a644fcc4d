"""The saga against the real google-genai SDK and a fake Gemini API, on a live server."""

from __future__ import annotations

import asyncio

from brain.backoff import Backoff
from server.avatar.stage import avatar_stage_with, retry_failed
from server.settings import Settings
from tests.avatar_saga.conftest import ATTEMPTS, post_state, saga_of, status_delta
from tests.conftest import start_server
from tests.fakes.gemini_api import FakeGeminiApi

STRESSED = {"state": "stressed", "mood": "anxious"}
RESTING = {"state": "resting", "mood": "tired"}


async def test_same_state_twice_generates_once_and_pushes_the_same_url(
    gemini_settings: Settings, fake_gemini: FakeGeminiApi, retry: Backoff
) -> None:
    """Two users, then the first user again, in one state: one generation, one image URL."""
    async with start_server(gemini_settings, stages=[avatar_stage_with(retry=retry)]) as live:
        saga = saga_of(live)
        ann, bob = await live.connect("ann", "watch"), await live.connect("bob", "watch")
        async with live.http() as http:
            await post_state(http, "ann", **STRESSED)
            first = await status_delta(ann, "ready")
            await post_state(http, "bob", **STRESSED)
            second = await status_delta(bob, "ready")
            await post_state(http, "ann", **RESTING)
            await status_delta(ann, "ready")
            await post_state(http, "ann", **STRESSED)
            await saga.idle()
        # The fake draws every prompt alike, so this image URL is the one ann already has:
        # the cache hit is counted, and there is nothing to commit.
        again = await live.services.state.current("ann")
        await ann.close()
        await bob.close()
    assert first["image_url"] == second["image_url"] == again.image_url
    assert again.avatar_status == "ready"
    assert first["image_url"].endswith(".png")
    assert fake_gemini.calls == 2  # stressed once, resting once
    assert live.services.metrics.avatar_cache.labels("hit")._value.get() == 2


async def test_users_needing_one_image_at_once_share_one_generation(
    gemini_settings: Settings, fake_gemini: FakeGeminiApi, retry: Backoff
) -> None:
    """While a generation is in flight, another user in the same state waits for it."""
    fake_gemini.hang()
    async with start_server(gemini_settings, stages=[avatar_stage_with(retry=retry)]) as live:
        saga = saga_of(live)
        ann, bob = await live.connect("ann", "watch"), await live.connect("bob", "watch")
        async with live.http() as http:
            await post_state(http, "ann", **STRESSED)
            await asyncio.to_thread(fake_gemini.hung.wait, 10)
            await post_state(http, "bob", **STRESSED)
            await status_delta(bob, "generating")
            fake_gemini.release()
            urls = {(await status_delta(ws, "ready"))["image_url"] for ws in (ann, bob)}
        await saga.idle()
        await ann.close()
        await bob.close()
    assert len(urls) == 1
    assert fake_gemini.calls == 1


async def test_failing_generation_retries_then_fails_and_retry_failed_recovers(
    gemini_settings: Settings,
    fake_gemini: FakeGeminiApi,
    retry: Backoff,
    backoffs: list[float],
) -> None:
    """503 on every try → backoff between tries → failed; retry-failed then makes it ready."""
    fake_gemini.fail(503, times=ATTEMPTS)
    async with start_server(gemini_settings, stages=[avatar_stage_with(retry=retry)]) as live:
        saga, services = saga_of(live), live.services
        watch = await live.connect("cat", "watch")
        async with live.http() as http:
            await post_state(http, "cat", **STRESSED)
            await status_delta(watch, "failed")
            await saga.idle()
            assert await services.store.users_with_avatar_status("failed") == ["cat"]
            assert fake_gemini.calls == ATTEMPTS
            assert len(backoffs) == ATTEMPTS - 1

            outcomes = await retry_failed(saga, services.state, services.store)
            ready = await status_delta(watch, "ready")
            assert await services.store.users_with_avatar_status("failed") == []
        await watch.close()
    assert [(o.user_id, o.status) for o in outcomes] == [("cat", "ready")]
    assert ready["image_url"] == outcomes[0].image_url
    assert fake_gemini.calls == ATTEMPTS + 1
    assert services.metrics.avatar_failures._value.get() == 1


async def test_refused_prompt_is_not_retried(
    gemini_settings: Settings,
    fake_gemini: FakeGeminiApi,
    retry: Backoff,
    backoffs: list[float],
) -> None:
    """A non-retryable error fails the saga at once."""
    fake_gemini.refuse()
    async with start_server(gemini_settings, stages=[avatar_stage_with(retry=retry)]) as live:
        watch = await live.connect("dan", "watch")
        async with live.http() as http:
            await post_state(http, "dan", **STRESSED)
            await status_delta(watch, "failed")
        await saga_of(live).idle()
        await watch.close()
    assert fake_gemini.calls == 1
    assert backoffs == []


async def test_image_of_an_older_state_never_replaces_a_newer_one(
    gemini_settings: Settings, fake_gemini: FakeGeminiApi, retry: Backoff
) -> None:
    """A slow generation finishing after the user moved on commits nothing."""
    fake_gemini.hang()
    async with start_server(gemini_settings, stages=[avatar_stage_with(retry=retry)]) as live:
        saga, state = saga_of(live), live.services.state
        watch = await live.connect("eve", "watch")
        async with live.http() as http:
            await post_state(http, "eve", **STRESSED)
            await asyncio.to_thread(fake_gemini.hung.wait, 10)
            await post_state(http, "eve", **RESTING)
            newer = await status_delta(watch, "ready")
            settled = await state.current("eve")
            fake_gemini.release()
            await saga.idle()
        await watch.close()
        final = await state.current("eve")
    assert fake_gemini.calls == 2
    assert final == settled
    assert (final.state, final.mood, final.avatar_status) == ("resting", "tired", "ready")
    assert final.image_url == newer["image_url"]
