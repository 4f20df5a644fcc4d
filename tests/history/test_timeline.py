"""The debug page's decision timeline in a real Chromium: recorded versions on load, who
decided and why on hover and on opening an entry, and a new version live from its delta."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.async_api import Browser, expect

from server import provenance
from server.history import history_stage
from server.provenance import Provenance
from server.settings import Settings
from tests.clients.test_debug_page import ARTIFACTS, browser, open_page
from tests.conftest import start_server
from tests.server.conftest import commit

__all__ = ["browser"]

pytestmark = pytest.mark.browser

LLM = Provenance(
    model="claude-haiku-4-5",
    cost_usd=0.00042,
    features={"hr": 96.0, "hr_slope": 2.1, "hrv_ratio": 0.62, "steps_per_min": 0},
)


def change(**changes: Any) -> Any:
    return lambda current: changes


async def test_timeline_shows_who_decided_and_why_and_follows_deltas(
    settings: Settings, browser: Browser
) -> None:
    async with start_server(settings, stages=[history_stage]) as live:
        state = live.services.state
        await state.update(
            "alice",
            change(state="calm", mood="content", energy=72, reasoning="Resting HR, steady HRV"),
            cause="analysis",
        )
        with provenance.attach(LLM, cause="analysis"):
            await state.update(
                "alice",
                change(
                    state="stressed",
                    mood="anxious",
                    energy=41,
                    source="llm",
                    reasoning="HR up 24 bpm in 10 min with no steps; HRV 38% below baseline",
                    actions=("breathing_session",),
                ),
                cause="analysis",
            )

        page = await open_page(browser, live.url, "alice")
        await expect(page.locator("#status")).to_have_text("open")
        entries = page.locator("#timeline li.event")
        await expect(entries).to_have_count(2)
        newest = entries.first
        await expect(newest.locator(".event-version")).to_have_text("v2")
        await expect(newest.locator(".event-state")).to_have_text("stressed / anxious")
        await expect(newest.locator(".event-source")).to_have_text("llm")
        await expect(entries.nth(1).locator(".event-source")).to_have_text("rules")
        await expect(newest.locator("summary")).to_have_attribute(
            "title", "HR up 24 bpm in 10 min with no steps; HRV 38% below baseline"
        )

        await newest.locator("summary").click()  # open it: the rest of the decision
        details = newest.locator(".event-details")
        await expect(details).to_be_visible()
        await expect(details).to_contain_text("claude-haiku-4-5")
        await expect(details).to_contain_text("$0.00042")
        await expect(details).to_contain_text("hrv_ratio=0.62")
        await expect(details).to_contain_text("changed")

        async with live.http() as client:  # a new version while the page watches
            await commit(
                client, "alice", state="calm", mood="content", reasoning="Breathing helped"
            )
        await expect(entries).to_have_count(3)
        latest = entries.first
        await expect(latest.locator(".event-version")).to_have_text("v3")
        await expect(latest.locator(".event-source")).to_have_text("manual")
        await expect(latest).not_to_have_class(re.compile("provisional"))  # recorded now
        await latest.locator("summary").click()
        await expect(latest.locator(".event-details")).to_contain_text("demo")  # the cause
        await expect(entries.nth(1).locator(".event-details")).to_be_visible()  # still open
        await expect(page.locator("#timeline-count")).to_have_text("3 versions")
        await expect(page.locator("#timeline-problem")).to_be_hidden()

        ARTIFACTS.mkdir(exist_ok=True)
        await page.locator("section[aria-label=timeline]").screenshot(
            path=str(ARTIFACTS / "debug-timeline.png")
        )
        await page.screenshot(path=str(ARTIFACTS / "debug-page-timeline.png"), full_page=True)
        assert page.errors == []  # type: ignore[attr-defined]
        await page.close()
