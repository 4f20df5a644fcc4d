"""Fixtures of the cluster suite: three nodes on the session's Redis and DynamoDB Local.

The machinery (nodes, devices, waits) is in :mod:`tests.cluster.nodes`; tests that restart
or pause a service start the cluster themselves on private ones (``cluster_on``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from functools import partial
from pathlib import Path

import pytest

from tests.cluster.nodes import (
    LEASE_MS,
    Cluster,
    Node,
    Watch,
    eventually,
    running_cluster,
    stored_keys,
    upload,
)
from tests.services import dynamodb_local, redis_process, redis_server  # noqa: F401  (fixtures)

__all__ = ["LEASE_MS", "Cluster", "Node", "Watch", "eventually", "stored_keys", "upload"]

ClusterOn = Callable[..., AbstractAsyncContextManager[Cluster]]


@pytest.fixture
async def cluster(
    tmp_path: Path,
    dynamodb_local: str,  # noqa: F811
    redis_server: str,  # noqa: F811
) -> AsyncIterator[Cluster]:
    """Three nodes on fresh DynamoDB tables and the shared Redis; stopped and the tables
    deleted at the end."""
    async with running_cluster(tmp_path, broker=redis_server, dynamodb=dynamodb_local) as nodes:
        yield nodes


@pytest.fixture
def cluster_on(tmp_path: Path) -> ClusterOn:
    """``cluster_on(broker=URL, dynamodb=ENDPOINT, nodes=3, settings={...})``: a cluster
    (an async context manager) on the services a test started itself."""

    return partial(running_cluster, tmp_path)
