"""Broker URLs as they may be printed or logged: no credential ever shows."""

from __future__ import annotations

import pytest

from server.broker.base import safe_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@10.0.0.5:6379/0", "redis://***@10.0.0.5:6379/0"),
        ("rediss://alice:s3cret@cache.internal/1", "rediss://***@cache.internal/1"),
        ("redis://alice@cache.internal:6380", "redis://***@cache.internal:6380"),
        ("rediss://:s3cret@[::1]:6379/0", "rediss://***@[::1]:6379/0"),
        ("redis://h:6379/0?password=s3cret&db=1", "redis://h:6379/0?password=***&db=1"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("memory", "memory"),
    ],
)
def test_a_url_is_shown_without_its_credentials(url: str, shown: str) -> None:
    assert safe_url(url) == shown
    assert "s3cret" not in safe_url(url)


def test_a_url_that_cannot_be_parsed_is_hidden_whole() -> None:
    assert safe_url("redis://:s3cret@host:notaport/0") == "<unparsable URL>"
