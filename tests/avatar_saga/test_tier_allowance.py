"""The avatar saga under each user's tier: generations per day (past them the image stays,
never an error) and the cache lifetime, on a live server (the Gemini SDK against the fake
API where generations are priced, the local renderer otherwise)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from brain.prices import PRICES
from brain.tiers import parse_tiers
from server.avatar.stage import avatar_stage
from server.settings import Settings
from tests.avatar_saga.conftest import post_state, saga_of
from tests.conftest import LiveServer, auth, start_server
from tests.fakes.gemini_api import FakeGeminiApi


def sample(live: LiveServer, name: str, labels: dict[str, str]) -> float:
    value = live.services.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else float(value)


async def make_premium(live: LiveServer, user: str) -> None:
    async with live.http() as http:
        answer = await http.put(
            f"/v1/users/{user}/tier", json={"tier": "premium"}, headers=auth(user, "service")
        )
    assert answer.status_code == 200


async def two_changes(live: LiveServer, user: str) -> list[str | None]:
    """The user's image URL after each of two changes of state (sagas run to the end)."""
    urls = []
    async with live.http() as http:
        for state, mood in (("exercising", "energized"), ("stressed", "anxious")):
            await post_state(http, user, state=state, mood=mood)
            await saga_of(live).idle()
            urls.append((await live.services.state.current(user)).image_url)
    return urls


async def test_past_the_days_generations_a_free_user_keeps_the_image_a_premium_user_does_not(
    gemini_settings: Settings, fake_gemini: FakeGeminiApi
) -> None:
    tiers = parse_tiers('{"free": {"avatar_generations_per_day": 1}}')
    settings = replace(gemini_settings, tiers=tiers)
    async with start_server(settings, stages=[avatar_stage]) as live:
        await make_premium(live, "pat")
        free = await two_changes(live, "fay")
        premium = await two_changes(live, "pat")
        fay = await live.services.state.current("fay")
        limited = sample(
            live, "companion_tier_limits_total", {"tier": "free", "limit": "avatar_daily"}
        )
        images = sample(live, "companion_cost_usd_total", {"tier": "free", "service": "images"})
        premium_images = sample(
            live, "companion_cost_usd_total", {"tier": "premium", "service": "images"}
        )
    assert free[0] is not None and free[1] == free[0]  # the first image stays
    assert fay.avatar_status == "ready" and fay.state == "stressed"
    assert limited == 1
    assert images == pytest.approx(PRICES["image_per_generation"])
    assert premium_images == pytest.approx(PRICES["image_per_generation"])
    assert fake_gemini.calls == 2  # fay's first, pat's second
    # pat's first image is fay's, from the cache; the second one is generated (the fake
    # API draws the same picture for every prompt, so the calls tell, not the URLs)
    assert premium[0] == free[0] and premium[1] is not None


async def test_a_cached_image_older_than_the_tiers_lifetime_is_generated_again(
    settings_with: Callable[..., Settings],
) -> None:
    tiers = parse_tiers('{"free": {"avatar_cache_ttl_s": 0}}')
    settings = settings_with(tiers=tiers, video="off")
    generated = {"result": "ok"}
    async with start_server(settings, stages=[avatar_stage]) as live:
        await make_premium(live, "pat")
        async with live.http() as http:
            await post_state(http, "fay", state="exercising", mood="energized")
            await saga_of(live).idle()
            first = sample(live, "companion_avatar_generations_total", generated)
            await post_state(http, "pat", state="exercising", mood="energized")
            await saga_of(live).idle()
            after_premium = sample(live, "companion_avatar_generations_total", generated)
            await post_state(http, "gus", state="exercising", mood="energized")
            await saga_of(live).idle()
            after_free = sample(live, "companion_avatar_generations_total", generated)
        gus = await live.services.state.current("gus")
    assert (first, after_premium, after_free) == (1, 1, 2)  # premium reuses, free renews
    assert gus.avatar_status == "ready"
