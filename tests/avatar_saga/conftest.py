"""Fixtures of the avatar saga tests: fake Gemini and Vertex APIs, settings for them, and
helpers that drive state through the demo route and read image deltas from a watch
connection."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from brain.backoff import Backoff, instant
from server.avatar.saga import AvatarSaga
from server.avatar.stage import SAGA
from server.settings import Settings
from tests.conftest import LiveServer, auth, recv_op
from tests.fakes.gemini_api import FakeGeminiApi
from tests.fakes.vertex_api import FakeVertexApi

API_KEY = "test"
ATTEMPTS = 3


@pytest.fixture
def fake_gemini(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGeminiApi]:
    """The fake Gemini API, with the SDK's environment pointing at it."""
    with FakeGeminiApi(api_key=API_KEY) as api:
        monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
        monkeypatch.setenv("GEMINI_API_KEY", API_KEY)
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", api.base_url)
        yield api


@pytest.fixture
def gemini_settings(settings_with: Callable[..., Settings]) -> Settings:
    """Gemini images and no clips: these tests are about the image path."""
    return settings_with(avatar="gemini", avatar_workers=2, video="off")


@pytest.fixture
def fake_vertex(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeVertexApi]:
    """The fake Vertex API (Veo), with the SDK's Vertex environment pointing at it."""
    with FakeVertexApi() as api:
        monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
        monkeypatch.setenv("GOOGLE_API_KEY", api.api_key)
        monkeypatch.setenv("GOOGLE_VERTEX_BASE_URL", api.base_url)
        yield api


@pytest.fixture
def veo_settings(settings_with: Callable[..., Settings]) -> Settings:
    """Local images, Veo clips polled every 10 ms within 10 s."""
    return settings_with(video="veo", video_poll_s=0.01, video_timeout_s=10.0)


@pytest.fixture
def clip_backoffs() -> list[float]:
    """The delays the clip step's backoff would have slept."""
    return []


@pytest.fixture
def clip_backoff(clip_backoffs: list[float]) -> Backoff:
    """A clip backoff of :data:`ATTEMPTS` tries that never sleeps."""
    return instant(Backoff(attempts=ATTEMPTS, base=2.0), record=clip_backoffs)


@pytest.fixture
def backoffs() -> list[float]:
    """The delays the saga's retry policy would have slept."""
    return []


@pytest.fixture
def retry(backoffs: list[float]) -> Backoff:
    """A retry policy of :data:`ATTEMPTS` tries that never sleeps."""
    return instant(Backoff(attempts=ATTEMPTS, base=1.0), record=backoffs)


def saga_of(live: LiveServer) -> AvatarSaga:
    saga = live.services.parts[SAGA]
    assert isinstance(saga, AvatarSaga)
    return saga


async def post_state(http: httpx.AsyncClient, user: str, **changes: Any) -> dict[str, Any]:
    """Commit ``changes`` for ``user`` through the demo route; the route's answer."""
    response = await http.post(
        f"/v1/demo/users/{user}/state", json=changes, headers=auth(user, "service")
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def delta_with(ws: ClientConnection, field: str) -> dict[str, Any]:
    """The changes of the next delta that sets ``field`` (skipping the others)."""
    while True:
        message = await recv_op(ws, "delta")
        changes: dict[str, Any] = message["changes"]
        if field in changes:
            return changes


async def status_delta(ws: ClientConnection, status: str) -> dict[str, Any]:
    """The changes of the next delta that sets ``avatar_status`` to ``status``."""
    while True:
        changes = await delta_with(ws, "avatar_status")
        if changes["avatar_status"] == status:
            return changes
