"""The fan-out benchmark's subscriber pool: worker processes that count rounds, merged exactly.

Runs against the raw ``websockets`` broadcast server (``bench/raw_server.py``) as a real
subprocess on 127.0.0.1, stopped by the test; every wait has a deadline.
"""

from __future__ import annotations

import sys

import pytest

from bench.harness import ServerProcess, free_port
from bench.subscriber_pool import SubscriberPool
from bench.subscribers import Trigger

pytestmark = pytest.mark.slow  # starts server and worker processes


async def test_rounds_reach_every_subscriber_of_every_worker_and_counts_merge() -> None:
    port = free_port()
    argv = [sys.executable, "-m", "bench.raw_server", "--port", str(port)]
    with ServerProcess(argv, port=port, name="raw") as server:
        pool = SubscriberPool("raw", server.url, "", processes=2)
        trigger = Trigger("raw", server.url)
        try:
            await pool.open(11, 500)
            assert pool.ready == 11
            await trigger.open()
            for _ in range(3):
                number = await trigger.fire()
                assert await pool.wait_round(number, pool.ready, 10)
            assert await pool.cpu_seconds() > 0
            await pool.collect()
        finally:
            await trigger.close()
            await pool.close()
    assert pool.errors == {}
    assert pool.delivered == 33  # 11 subscribers (6 + 5 over two workers) x 3 rounds
    assert pool.latency.count == 33  # the workers' histograms merged sample for sample


async def test_a_pool_refuses_zero_processes() -> None:
    with pytest.raises(ValueError, match="processes"):
        SubscriberPool("raw", "http://127.0.0.1:1", "", processes=0)
