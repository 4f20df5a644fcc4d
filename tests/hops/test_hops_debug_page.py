"""The debug page shows who is behind and what came of the commands, in a real Chromium."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, expect

from tests.clients.test_debug_page import browser, open_page
from tests.conftest import LiveServer, recv_op, send
from tests.server.conftest import commit

__all__ = ["browser"]

pytestmark = pytest.mark.browser


async def test_page_shows_devices_behind_and_command_outcomes(
    live_server: LiveServer, browser: Browser
) -> None:
    page = await open_page(browser, live_server.url, "alice")
    await expect(page.locator("#status")).to_have_text("open")
    phone = await live_server.connect("alice")
    async with live_server.http() as client:
        await commit(client, "alice", mood="happy")
        await commit(client, "alice", mood="tired")
        await send(phone, {"op": "seen", "device": "watch-1", "kind": "watch", "version": 0})
        await send(phone, {"op": "seen", "device": "phone", "version": 2})
        await commit(client, "alice", actions=["breathing_session"])

    devices = page.locator("#device-list tr")
    await expect(devices).to_have_count(2)
    watch = devices.filter(has_text="watch-1")
    await expect(watch.locator("td").nth(4)).to_have_text("3")
    await expect(watch.locator("td.behind")).to_have_count(1)
    await expect(page.locator("#devices-summary")).to_contain_text("1 behind by more than one")
    commands = page.locator("#command-list tr")
    await expect(commands).to_have_count(1)
    await expect(commands.first.locator("td.command-kind")).to_have_text("breathing session")
    await expect(commands.first.locator("td.outcome")).to_have_text("pending")

    command = (await recv_op(phone, "commands"))["commands"][0]
    await send(phone, {"op": "command_result", "id": command["id"], "outcome": "dismissed"})
    await recv_op(phone, "command_ack")
    await phone.close()
    await expect(commands.first.locator("td.outcome")).to_have_text("dismissed", timeout=10_000)
    await expect(commands.first.locator("td").nth(6)).to_have_text("phone")
    assert page.errors == []  # type: ignore[attr-defined]
