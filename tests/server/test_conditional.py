"""Every conditional route answers ``If-None-Match`` the same way (RFC 9110): a listed tag,
weak or strong, or ``*`` gives 304; a tag that merely contains the ETag does not."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from server.avatar.stage import MEDIA, avatar_stage
from server.settings import Settings
from tests.conftest import LiveServer, auth, start_server
from tests.server.conftest import commit


def variants(etag: str) -> dict[str, int]:
    """If-None-Match values and the status each must give for a resource with ``etag``."""
    opaque = etag.removeprefix("W/").strip('"')
    return {
        etag: 304,
        f"W/{etag}": 304,
        f'"other", {etag}': 304,
        "*": 304,
        f'"x{opaque}x"': 200,
        f"x{etag}": 200,  # malformed; a substring test would call it a match
        f'"{opaque}-gzip"': 200,
        f'"{opaque[:-1]}"': 200,
        opaque: 200,  # unquoted: not an entity tag
    }


async def conditional_answers(
    client: httpx.AsyncClient, path: str, headers: dict[str, str]
) -> tuple[dict[str, int], dict[str, int]]:
    first = await client.get(path, headers=headers)
    assert first.status_code == 200, path
    expected = variants(first.headers["etag"])
    got = {
        value: (await client.get(path, headers={**headers, "If-None-Match": value})).status_code
        for value in expected
    }
    return expected, got


async def test_state_debug_files_and_media_share_one_matcher(settings: Settings) -> None:
    async with start_server(settings, stages=[avatar_stage]) as live, live.http() as client:
        await commit(client, "alice", mood="happy")
        async with asyncio.timeout(10):  # the image's and clip's commits would move the ETag
            while True:
                state = (await client.get("/v1/users/alice/state", headers=auth("alice"))).json()
                settled = ("ready", "failed")
                if state["avatar_status"] in settled and state["video_status"] in settled:
                    break
                await asyncio.sleep(0.02)  # polling a condition under a deadline
        media = live.services.parts[MEDIA]
        await media.put("avatars/test.png", b"\x89PNG fake", "image/png")
        paths = {
            "/v1/users/alice/state": auth("alice"),
            "/debug/static/debug.js": {},
            "/debug": {},
            "/media/avatars/test.png": {},
        }
        for path, headers in paths.items():
            expected, got = await conditional_answers(client, path, headers)
            assert got == expected, path


async def test_a_304_keeps_the_etag_and_the_cache_headers(live_server: LiveServer) -> None:
    async with live_server.http() as client:
        first = await client.get("/debug/static/debug.css")
        again = await client.get(
            "/debug/static/debug.css", headers={"If-None-Match": first.headers["etag"]}
        )
    assert again.status_code == 304
    assert again.headers["etag"] == first.headers["etag"]
    assert again.headers["cache-control"] == "no-cache"
    assert again.headers["referrer-policy"] == "no-referrer"


@pytest.mark.parametrize("status", [401, 404, 429])
async def test_problem_answers_are_counted_by_status(settings: Settings, status: int) -> None:
    from dataclasses import replace

    tight = replace(settings, rest_rate_per_s=0.01, rest_rate_burst=1)
    async with start_server(tight) as live, live.http() as client:
        if status == 401:
            await client.get("/v1/users/alice/state")
        elif status == 404:
            await client.get("/no/such/path")
        else:
            for _ in range(2):
                await client.get("/v1/users/alice/state", headers=auth("alice"))
        metrics = (await client.get("/metrics")).text
    assert f'companion_http_errors_total{{status="{status}"}} 1.0' in metrics
