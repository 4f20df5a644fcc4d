"""Fixtures of the broker tests: the session's redis-server, and one a test may break.

``redis_process`` is a redis-server of its own for one test, on a fixed loopback port, that
the test stops and starts again on the same port (a restart), or pauses with SIGSTOP (a hung
Redis, as in a failover). It is stopped at the end of the test in any case. The process
class is :class:`tests.services.RedisProcess`, shared with the cluster tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from brain.backoff import Backoff
from server.broker.redis import RedisBroker
from tests.services import RedisProcess, redis_process, redis_server

__all__ = ["RedisProcess", "eventually", "quick_broker", "redis_process", "redis_server"]


def quick_broker(url: str) -> RedisBroker:
    """A broker that notices outages within a second and retries at most 0.2 s apart."""
    return RedisBroker(
        url,
        heartbeat_s=0.2,
        command_timeout_s=0.5,
        backoff=Backoff(attempts=None, base=0.02, cap=0.2),
    )


async def eventually(condition: Callable[[], bool], within: float = 10.0) -> None:
    """Return once ``condition()`` holds; fail the test after ``within`` seconds."""
    async with asyncio.timeout(within):
        # Polled: broker health and a process's state change without an event to wait on.
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.02)  # the poll interval of a deadline loop
