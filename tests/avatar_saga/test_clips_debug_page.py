"""The debug page in a real Chromium plays the avatar's clip once it is pushed: an animated
WebP in the image element, a Veo MP4 in the video element."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from playwright.async_api import Browser, expect

from server.avatar.stage import avatar_stage, avatar_stage_with
from server.settings import Settings
from tests.avatar_saga.conftest import post_state, saga_of
from tests.clients.test_debug_page import browser, open_page  # noqa: F401  (fixture)
from tests.conftest import start_server
from tests.fakes.vertex_api import FakeVertexApi

pytestmark = pytest.mark.browser

STRESSED = {"state": "stressed", "mood": "anxious"}


async def test_the_page_swaps_the_still_for_the_webp_clip(
    settings: Settings,
    browser: Browser,  # noqa: F811
) -> None:
    async with start_server(settings, stages=[avatar_stage]) as live:
        page = await open_page(browser, live.url, "nia")
        await expect(page.locator("#status")).to_have_text("open")
        async with live.http() as http:
            await post_state(http, "nia", **STRESSED)
        await expect(page.locator("#avatar-status")).to_have_text("avatar: ready · clip: ready")
        clip_url = (await live.services.state.current("nia")).video_url
        await expect(page.locator("#avatar")).to_have_attribute("src", clip_url)
        # The URL names the configured public host (port 0 in tests): load the same path
        # from the page's own origin to see Chromium decode the animated WebP.
        width = await page.evaluate(
            """path => new Promise((resolve, reject) => {
                const img = new Image();
                img.onload = () => resolve(img.naturalWidth);
                img.onerror = () => reject(new Error("clip did not decode"));
                img.src = path;
            })""",
            urlsplit(str(clip_url)).path,
        )
        await expect(page.locator("#avatar-clip")).to_be_hidden()
        await saga_of(live).idle()
        await page.close()
    assert clip_url and clip_url.endswith(".webp")
    assert width == 256  # the clip's own size, decoded by the browser
    assert page.errors == []  # type: ignore[attr-defined]


async def test_the_page_plays_a_veo_clip_in_the_video_element(
    veo_settings: Settings,
    fake_vertex: FakeVertexApi,
    browser: Browser,  # noqa: F811
) -> None:
    async with start_server(veo_settings, stages=[avatar_stage_with()]) as live:
        page = await open_page(browser, live.url, "oli")
        await expect(page.locator("#status")).to_have_text("open")
        async with live.http() as http:
            await post_state(http, "oli", **STRESSED)
        await expect(page.locator("#avatar-status")).to_have_text("avatar: ready · clip: ready")
        state = await live.services.state.current("oli")
        await expect(page.locator("#avatar-clip")).to_have_attribute("src", str(state.video_url))
        await expect(page.locator("#avatar-clip")).to_be_visible()
        await expect(page.locator("#avatar")).to_be_hidden()
        await saga_of(live).idle()
        await page.close()
    assert str(state.video_url).endswith(".mp4")
