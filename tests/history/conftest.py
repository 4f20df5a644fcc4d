"""Fixtures of the decision-history tests: a server that records history, on each store.

``history_server`` runs the real app with :func:`server.history.history_stage` on a
loopback socket, on SQLite and on DynamoDB Local (the ``store`` fixture of the store
tests), and a clock the test may move (commit times and the route's "now").
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from server.history import history_stage
from server.settings import Settings
from server.store.base import Store
from tests.conftest import LiveServer, start_server
from tests.server.conftest import server_log
from tests.services import dynamodb_local
from tests.store.conftest import dynamodb_store_factory, store

__all__ = ["dynamodb_local", "dynamodb_store_factory", "server_log", "store"]


@dataclass
class Clock:
    """The server's clock: the real time plus an offset the test moves forward."""

    offset_s: float = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset_s

    def advance(self, seconds: float) -> None:
        self.offset_s += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def history_server(
    settings: Settings, store: Store, clock: Clock
) -> AsyncIterator[LiveServer]:
    """A server recording history on the ``store`` of the parameter (SQLite, DynamoDB)."""
    async with start_server(settings, store=store, stages=[history_stage], clock=clock) as live:
        yield live
