"""Fixtures of the store tests: a ``store`` of each adapter, fresh for every test.

The DynamoDB variant runs against a real DynamoDB Local (``tests/services.py``) with a
fresh table prefix per test, and with retries that take no time (:mod:`tests.stores`).
"""

from __future__ import annotations

from tests.services import dynamodb_local, redis_server
from tests.stores import dynamodb_store_factory, store

__all__ = ["dynamodb_local", "dynamodb_store_factory", "redis_server", "store"]
