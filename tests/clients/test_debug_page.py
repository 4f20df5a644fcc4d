"""The browser debug page in a real Chromium: live state, frames chart, deltas, reconnects.

Driven by Python Playwright against Debian's ``/usr/bin/chromium`` (never a downloaded
browser). Waits are Playwright's auto-retrying assertions, each with a timeout.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from brain.scenarios import history
from server.analysis.pipeline import pipeline_stage
from server.settings import Settings
from tests.conftest import LiveServer, auth, start_server, token

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def chromium_missing() -> bool:
    return not CHROMIUM.exists()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if chromium_missing():
        message = f"{CHROMIUM} is missing (apt-get install -y chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            await browser.close()


async def open_page(browser: Browser, base_url: str, user: str) -> Page:
    page = await browser.new_page(viewport={"width": 1280, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(f"{base_url}/debug?token={token(user, 'debug')}")
    page.errors = errors  # type: ignore[attr-defined]
    return page


async def test_page_shows_state_frames_image_and_deltas_as_they_are_pushed(
    live_server: LiveServer, browser: Browser
) -> None:
    page = await open_page(browser, live_server.url, "alice")
    await expect(page.locator("#status")).to_have_text("open")
    await expect(page.locator("#who")).to_contain_text("user alice (debug token)")
    await expect(page.locator("#state")).to_have_text("calm")
    await expect(page.locator("#version")).to_have_text("0")

    await page.click("#inject-stress")  # ten minutes of stress frames through ingest
    await expect(page.locator("#inject-result")).to_have_text("stress: 20 frames injected")
    await expect(page.locator("#points")).to_have_text("20 points")
    hr_pixels = await page.evaluate(
        """() => {
            const c = document.getElementById('chart');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0;
            for (let i = 0; i < d.length; i += 4) if (d[i] > 200 && d[i+1] < 120) n++;
            return n;
        }"""
    )
    assert hr_pixels > 100  # the HR line is drawn

    # Until the analysis pipeline decides from those frames, change the state by hand.
    image = f"{live_server.url}/debug/static/avatar.svg?v=stressed"
    change = {
        "state": "stressed",
        "mood": "anxious",
        "energy": 35,
        "image_url": image,
        "reasoning": "HR up 20 bpm with no steps",
        "actions": ["breathing_session"],
    }
    async with live_server.http() as http:
        answer = await http.post(
            "/v1/demo/users/alice/state", json=change, headers=auth("ops", "service")
        )
    committed = answer.json()

    await expect(page.locator("#state")).to_have_text("stressed")
    await expect(page.locator("#mood")).to_have_text("anxious")
    await expect(page.locator("#source")).to_have_text("manual")
    await expect(page.locator("#energy")).to_have_text("energy 35")
    await expect(page.locator("#reasoning")).to_have_text("HR up 20 bpm with no steps")
    await expect(page.locator("#actions li")).to_have_text(["breathing session"])
    await expect(page.locator("#version")).to_have_text(str(committed["version"]))
    await expect(page.locator("#hash")).to_have_text(committed["state_hash"])
    await expect(page.locator("#avatar")).to_have_attribute("src", image)
    loaded = await page.locator("#avatar").evaluate("img => img.complete && img.naturalWidth")
    assert loaded == 160
    rows = page.locator("#delta-log tr")
    await expect(rows).to_have_count(1)
    await expect(rows.first.locator("td").nth(1)).to_have_text(f"v{committed['version']}")
    await expect(rows.first.locator("td.changes")).to_contain_text("mood=anxious")
    await expect(rows.first.locator("td.latency")).to_have_text(re.compile(r"^-?\d+ ms$"))

    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "debug-page.png"), full_page=True)
    assert page.errors == []  # type: ignore[attr-defined]


async def test_page_reconnects_after_a_server_restart_and_resyncs(
    browser: Browser, start_server_process: Callable[..., Any], server_port: int
) -> None:
    url = f"http://127.0.0.1:{server_port}"
    server = await start_server_process()
    page = await open_page(browser, url, "bob")
    await expect(page.locator("#status")).to_have_text("open")
    await expect(page.locator("#reconnects")).to_have_text("0")

    await server.stop()  # graceful: uvicorn closes the socket with 1012
    await expect(page.locator("#status")).to_contain_text("closed")
    server = await start_server_process()
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        change = {"state": "resting", "mood": "tired", "energy": 20}
        answer = await http.post(
            "/v1/demo/users/bob/state", json=change, headers=auth("ops", "service")
        )
        assert answer.status_code == 200
    # Committed while the page was away: it learns it from the snapshot after reconnecting.
    await expect(page.locator("#status")).to_have_text("open", timeout=30_000)
    await expect(page.locator("#mood")).to_have_text("tired")
    reconnects = int(await page.locator("#reconnects").inner_text())
    assert reconnects >= 1
    assert page.errors == []  # type: ignore[attr-defined]


async def test_debug_files_are_served_with_types_and_no_cache(live_server: LiveServer) -> None:
    async with live_server.http() as http:
        expected = {
            "/debug": "text/html; charset=utf-8",
            "/debug/static/debug.js": "text/javascript; charset=utf-8",
            "/debug/static/debug.css": "text/css; charset=utf-8",
            "/debug/static/avatar.svg": "image/svg+xml",
        }
        for path, content_type in expected.items():
            response = await http.get(path)
            assert response.status_code == 200, path
            assert response.headers["content-type"] == content_type
            assert response.headers["cache-control"] == "no-cache"
            again = await http.get(path, headers={"If-None-Match": response.headers["etag"]})
            assert again.status_code == 304
        assert "script-src 'self'" in (await http.get("/debug")).headers["content-security-policy"]
        for bad in (
            "/debug/static/..%2Fbridge.py",
            "/debug/static/bridge.py",
            "/debug/static/x.js",
        ):
            assert (await http.get(bad)).status_code == 404, bad


async def test_page_shows_the_health_metrics_the_analysis_computed(
    settings: Settings, browser: Browser
) -> None:
    """Two weeks of burnout in the store, then the stress button: the real pipeline's
    health metrics (fatigue, stress, sleep, HRV trend, day budget) appear on the page."""
    now = int(time.time() * 1000)
    stored = history("burnout", end_ms=now - 20 * 60_000)
    fast = replace(settings, debounce_ms=1)
    async with start_server(fast, stages=[pipeline_stage]) as live:
        await live.services.store.put_frames([("alice", f) for f in stored])
        page = await open_page(browser, live.url, "alice")
        await expect(page.locator("#status")).to_have_text("open")
        await expect(page.locator("#health-fatigue")).to_have_text("\u2013")  # unknown yet

        await page.click("#inject-stress")
        await expect(page.locator("#health")).to_have_attribute("data-known", "yes")
        state = await live.services.state.current("alice")
        health = state.health
        assert health is not None and len(health.hrv_trend) == len(health.sleep_hours) == 3
        await expect(page.locator("#health-fatigue")).to_have_text(str(health.fatigue_score))
        await expect(page.locator("#health-hrv")).to_have_text(
            " → ".join(f"{v:g} ms" for v in health.hrv_trend)
        )
        await expect(page.locator("#health-sleep")).to_have_text(
            " → ".join(f"{v:g} h" for v in health.sleep_hours)
        )
        await expect(page.locator("#health-budget")).to_have_text(str(health.energy_budget))
        await expect(page.locator("#health-stress")).to_contain_text(str(health.stress_level))

        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "debug-page-health.png"), full_page=True)
        assert page.errors == []  # type: ignore[attr-defined]
