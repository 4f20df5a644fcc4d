"""``companion tables create`` waits for DynamoDB to listen, as compose's ``tables`` job needs.

The command runs as a child process against a loopback port where nothing listens yet; a
plain TCP relay to the session's real DynamoDB Local then opens on that port, as a
DynamoDB container finishing its start would.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from server.store.schema import TABLES
from tests.clients.conftest import Child, free_port
from tests.services import FAKE_AWS_ENV, dynamodb_local

__all__ = ["dynamodb_local"]


async def start_tables_create(endpoint: str, prefix: str, wait_s: float) -> Child:
    env = {
        **os.environ,
        **FAKE_AWS_ENV,
        "COMPANION_STORE": "dynamodb",
        "COMPANION_TABLE_PREFIX": prefix,
        "AWS_ENDPOINT_URL_DYNAMODB": endpoint,
        "PYTHONUNBUFFERED": "1",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.cli", "tables", "create", "--wait", str(wait_s),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    return Child("tables-create", process)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


@asynccontextmanager
async def relay(port: int, target: str) -> AsyncIterator[None]:
    """Listen on ``127.0.0.1:port`` and relay every connection to ``target`` (host:port)."""
    host, target_port = target.rsplit(":", 1)
    pipes: set[asyncio.Task[None]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(host, int(target_port))
        for pipe in (_pipe(reader, up_writer), _pipe(up_reader, writer)):
            task = asyncio.create_task(pipe)
            pipes.add(task)
            task.add_done_callback(pipes.discard)

    server = await asyncio.start_server(serve, "127.0.0.1", port)
    try:
        yield
    finally:
        server.close()
        for task in list(pipes):
            task.cancel()
        with suppress(asyncio.CancelledError):
            await asyncio.gather(*pipes, return_exceptions=True)
        await server.wait_closed()


async def test_tables_create_waits_until_dynamodb_listens(dynamodb_local: str) -> None:
    port = free_port()
    command = await start_tables_create(f"http://127.0.0.1:{port}", "waits-", wait_s=60)
    try:
        await command.expect(r"DynamoDB not answering yet .*; retrying in", limit_s=30)
        async with relay(port, dynamodb_local.removeprefix("http://")):
            assert await command.wait(limit_s=60) == 0, command.output()
    finally:
        if command.process.returncode is None:
            command.process.kill()
            await command.wait()
    assert {spec.name("waits-") for spec in TABLES} <= set(command.lines), command.output()
    assert not any("Traceback" in line for line in command.lines), command.output()


async def test_tables_create_gives_up_with_one_clear_line_and_no_traceback() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing will ever listen there
    command = await start_tables_create(endpoint, "never-", wait_s=1)
    assert await command.wait(limit_s=60) == 1
    assert any("DynamoDB did not answer within 1s" in line for line in command.lines)
    assert not any("Traceback" in line for line in command.lines), command.output()
