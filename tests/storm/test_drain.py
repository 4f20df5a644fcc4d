"""A node going down gracefully spreads its clients' return over the drain window."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from websockets.asyncio.client import ClientConnection

from server.settings import Settings
from tests.conftest import start_server
from tests.server.conftest import close_code

CLIENTS = 20


async def closed_at(ws: ClientConnection) -> tuple[int | None, float]:
    code = await close_code(ws, within=10)
    return code, time.perf_counter()


async def test_graceful_stop_closes_clients_with_1012_spread_over_the_window(
    settings_with: Callable[..., Settings],
) -> None:
    # 20 clients at 10/s: a 2 s window (under the 4 s cap).
    settings = settings_with(drain_s=4.0, admit_rate=10.0, admit_burst=CLIENTS)
    async with start_server(settings) as live:
        sockets = [await live.connect(f"u{i}", "watch") for i in range(CLIENTS)]
        waits = [asyncio.create_task(closed_at(ws)) for ws in sockets]
        began = time.perf_counter()
        live.server.should_exit = True
        results = await asyncio.gather(*waits)
    codes = {code for code, _ in results}
    times = sorted(at - began for _, at in results)
    assert codes == {1012}
    assert times[-1] <= 2.0 + 1.0  # within the window (and the event loop's slack)
    assert times[-1] - times[0] >= 0.5  # spread, not all at once
    # Spread over the window: some in each half.
    assert any(t < 1.0 for t in times) and any(t >= 1.0 for t in times)


async def test_graceful_stop_with_no_window_closes_at_once(
    settings_with: Callable[..., Settings],
) -> None:
    async with start_server(settings_with(drain_s=0.0)) as live:
        sockets = [await live.connect(f"u{i}", "watch") for i in range(5)]
        waits = [asyncio.create_task(closed_at(ws)) for ws in sockets]
        began = time.perf_counter()
        live.server.should_exit = True
        results = await asyncio.gather(*waits)
    assert {code for code, _ in results} == {1012}
    assert max(at for _, at in results) - began < 1.0
