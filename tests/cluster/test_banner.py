"""``companion serve`` never prints or logs the broker's password, and still uses it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.cluster.nodes import ROOT, node_process
from tests.conftest import SECRET
from tests.services import RedisProcess, free_port

pytestmark = [pytest.mark.redis]

PASSWORD = "s3cret-broker-pass"


@pytest.fixture
async def redis_with_password(tmp_path: Path) -> AsyncIterator[RedisProcess]:
    """A redis-server of this test only that requires :data:`PASSWORD`."""
    workdir = tmp_path / "redis"
    workdir.mkdir()
    redis = RedisProcess(free_port(), workdir, password=PASSWORD)
    await redis.start()
    try:
        yield redis
    finally:
        await redis.stop()


async def test_the_start_banner_shows_the_broker_url_without_its_password(
    tmp_path: Path, redis_with_password: RedisProcess
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPANION_")}
    env.update(
        COMPANION_SECRET=SECRET,
        COMPANION_BROKER=redis_with_password.url,
        COMPANION_LOG_LEVEL="debug",
        PYTHONPATH=str(ROOT),
    )
    async with node_process("banner", env, tmp_path / "node") as node:
        async with node.http() as http:
            ready = await http.get("/readyz")
    text = "".join(node.log)

    assert ready.status_code == 200, ready.text  # it authenticated with the password
    assert f"broker=redis://***@127.0.0.1:{redis_with_password.port}/0" in text
    assert PASSWORD not in text
