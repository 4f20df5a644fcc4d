"""Fixtures of the pipeline tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.anthropic_api import API_KEY, FakeAnthropicApi


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAnthropicApi]:
    """The fake Anthropic API, which the real SDK in the server reaches through the
    environment (``ANTHROPIC_BASE_URL``, a test key)."""
    with FakeAnthropicApi() as fake:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)
        yield fake
