"""The OpenAPI document is the contract: a property-based fuzz of every documented operation
(schemathesis, data valid and invalid by the document) against a live server with a valid
service token, which must answer no 5xx and nothing the document does not describe.

The server runs in the test's event loop on a loopback socket; schemathesis' client is
blocking, so the fuzz runs in a worker thread. Service tokens have no REST rate limit, so
the hundreds of calls run on the default settings.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode, checks

from server.analysis.pipeline import pipeline_stage
from server.settings import Settings
from tests.conftest import start_server, token
from tests.server.conftest import errors_in

EXAMPLES_PER_OPERATION = 25
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]


def fuzz(
    document: dict[str, Any], base_url: str, headers: dict[str, str]
) -> tuple[list[str], Counter[tuple[str, int]]]:
    """Fuzz every operation of ``document``: the failures, one line each (none is good),
    and how often each operation answered each status."""
    schema = schemathesis.openapi.from_dict(document)
    failures: list[str] = []
    statuses: Counter[tuple[str, int]] = Counter()
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            label = f"{operation.label} [{mode.value}]"

            # A long-poll may hold for up to a minute by the document; hold it briefly here.
            fixed = {"query": {"wait": 0.1}} if _has_query(operation, "wait") else {}

            @given(case=operation.as_strategy(generation_mode=mode, **fixed))
            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                derandomize=True,
                database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            def check(case: Any) -> None:
                try:
                    response = case.call(base_url=base_url, headers=headers, timeout=10)
                    statuses[operation.label, response.status_code] += 1  # noqa: B023
                    case.validate_response(response, checks=CHECKS)
                except (Exception, BaseExceptionGroup) as exc:  # failed: go on, report all
                    failures.append(f"{label}: {type(exc).__name__}: {str(exc)[:400]}")  # noqa: B023

            try:
                check()
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE, label  # nothing there to make invalid
    return failures, statuses


def _has_query(operation: Any, name: str) -> bool:
    return any(p.name == name for p in operation.query)


async def test_every_documented_route_keeps_the_document_under_fuzzing(
    settings: Settings, server_log: list[logging.LogRecord]
) -> None:
    async with start_server(settings, stages=[pipeline_stage]) as live:
        async with httpx.AsyncClient(base_url=live.url) as client:
            document = (await client.get("/openapi.json")).json()
        headers = {"Authorization": f"Bearer {token('alice', 'service')}"}
        failures, statuses = await asyncio.to_thread(fuzz, document, live.url, headers)
    assert failures == []
    assert errors_in(server_log) == []  # no client input gives an ERROR line or a traceback
    operations = {f"{m.upper()} {p}" for p, item in document["paths"].items() for m in item}
    operations -= {f"PARAMETERS {p}" for p in document["paths"]}
    reached = {label for label, _ in statuses}
    assert reached == operations
    # The service token got through: each operation answered a 2xx at least once, but those
    # where random data is almost never valid (unknown file names, a legacy reading in range).
    succeeded = {label for label, status in statuses if status < 300}
    rarely_valid = {
        "GET /debug/static/{name}",
        "GET /ops/static/{name}",
        "GET /media/{key}",
        "POST /sensor-data",
        "POST /api/v1/user/{user_id}/data",
    }
    assert operations - succeeded <= rarely_valid
