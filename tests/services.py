"""Real services for the tests: DynamoDB Local and redis-server on loopback ports.

Each fixture starts one real process per test session on a free ``127.0.0.1`` port, waits
until it answers (a real request, polled within a deadline), yields how to reach it, and
stops it through its ``Popen`` handle. A missing component skips the tests that need it on
a developer's machine and fails them in CI (``CI=true``), where a skip would hide that the
environment is incomplete. The process's output goes to a log file in the session's
temporary directory, and its tail is part of every failure message.

Use from a conftest: ``from tests.services import dynamodb_local, redis_server``.

A test that breaks a service (restarts Redis, pauses DynamoDB) must not break the session's:
:class:`RedisProcess` and :class:`DynamoDBProcess` are private processes of one test (or one
benchmark) that it stops and starts again on the same port, or pauses with SIGSTOP.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import IO

import pytest
from botocore.config import Config
from botocore.session import get_session

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
DYNAMODB_LOCAL_DIR = REPO_ROOT / ".cache" / "dynamodb-local"
START_TIMEOUT_SECONDS = 60.0
POLL_INTERVAL_SECONDS = 0.1
STOP_TIMEOUT_SECONDS = 10.0

FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_SESSION_TOKEN": "test",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    # Never look for credentials or settings anywhere else (files, instance metadata).
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}
"""What the DynamoDB fixture puts in the environment while it runs: DynamoDB Local takes
any credentials, but botocore refuses to sign without some."""


def missing(what: str) -> None:
    """Fail (in CI) or skip (elsewhere) the requesting test because ``what`` is missing."""
    message = f"{what}; scripts/test installs it"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI=true, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _log_tail(log_path: pathlib.Path, lines: int = 20) -> str:
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    return "\n".join(text.splitlines()[-lines:]) or "(no output)"


def _wait_until_ready(
    name: str, process: subprocess.Popen[bytes], ready: Callable[[], bool], log_path: pathlib.Path
) -> None:
    """Poll ``ready()`` until it is true; raise if the process dies or the deadline passes."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"{name} exited with code {process.returncode} before it answered:\n"
                f"{_log_tail(log_path)}"
            )
        if ready():
            return
        time.sleep(POLL_INTERVAL_SECONDS)  # the poll interval of a deadline loop
    raise RuntimeError(
        f"{name} did not answer within {START_TIMEOUT_SECONDS:.0f} s:\n{_log_tail(log_path)}"
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate the process, and kill it if it does not exit in time."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def _running(
    name: str, command: list[str], log_path: pathlib.Path, ready: Callable[[], bool]
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``command`` in the log's directory, wait until ``ready()``, yield it, stop it."""
    log: IO[bytes] = log_path.open("wb")
    try:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=log_path.parent,  # whatever the process leaves behind stays out of the repo
        )
        try:
            _wait_until_ready(name, process, ready, log_path)
            yield process
        finally:
            _stop(process)
    finally:
        log.close()


def dynamodb_local_command(port: int) -> list[str]:
    """The command that runs DynamoDB Local in memory on ``port``; skips (fails in CI) the
    requesting test when Java or the jar is missing."""
    java = shutil.which("java")
    jar = DYNAMODB_LOCAL_DIR / "DynamoDBLocal.jar"
    if java is None:
        missing("Java (to run DynamoDB Local) is not installed")
    if not jar.is_file():
        missing(f"DynamoDB Local is not installed ({os.path.relpath(jar, REPO_ROOT)} is missing)")
    assert java is not None
    return [
        java,
        f"-Djava.library.path={DYNAMODB_LOCAL_DIR / 'DynamoDBLocal_lib'}",
        "-jar",
        str(jar),
        "-inMemory",
        "-sharedDb",  # one set of tables whatever the credentials and region
        "-disableTelemetry",
        "-port",
        str(port),
    ]


def redis_server_command(
    port: int, workdir: pathlib.Path, password: str | None = None
) -> list[str]:
    """The command that runs a redis-server without persistence on ``port`` (requiring
    ``password`` if given); skips (fails in CI) the requesting test when it is missing."""
    binary = shutil.which("redis-server")
    if binary is None:
        missing("redis-server is not installed (Debian package redis-server)")
    assert binary is not None
    command = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
    ]
    return command + (["--requirepass", password] if password else [])


def _dynamodb_answers(endpoint: str) -> bool:
    """Whether DynamoDB Local at ``endpoint`` answers a ListTables call."""
    client = get_session().create_client(
        "dynamodb",
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(connect_timeout=1, read_timeout=2, retries={"total_max_attempts": 1}),
    )
    try:
        client.list_tables(Limit=1)
    except Exception:  # not up yet: refused, reset, or an error page while it starts
        return False
    finally:
        client.close()
    return True


@pytest.fixture(scope="session")
def dynamodb_local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """DynamoDB Local (in memory) on a free loopback port; yields its endpoint URL.

    Sets fake AWS credentials and region in the environment for the rest of the session.
    """
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    command = dynamodb_local_command(port)
    log_path = tmp_path_factory.mktemp("dynamodb-local") / "dynamodb-local.log"
    with pytest.MonkeyPatch.context() as env:
        for name, value in FAKE_AWS_ENV.items():
            env.setenv(name, value)
        with _running("DynamoDB Local", command, log_path, lambda: _dynamodb_answers(endpoint)):
            yield endpoint


def _redis_answers(port: int, password: str | None = None) -> bool:
    """Whether redis-server on ``port`` answers PING with PONG (after AUTH with
    ``password``, if given)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as connection:
            if password:
                secret = password.encode()
                connection.sendall(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(secret), secret))
                if not connection.recv(64).startswith(b"+OK"):
                    return False
            connection.sendall(b"*1\r\n$4\r\nPING\r\n")
            return connection.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throw-away redis-server (no persistence) on a free loopback port; yields its URL."""
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    command = redis_server_command(port, workdir)
    with _running("redis-server", command, workdir / "redis.log", lambda: _redis_answers(port)):
        yield f"redis://127.0.0.1:{port}/0"


class ServiceProcess:
    """A service process of one test that can be stopped, started again on the same port,
    and paused (SIGSTOP: connections stay open, nothing answers, as a hung host)."""

    name = "service"

    def __init__(self, port: int, workdir: pathlib.Path) -> None:
        self.port = port
        self.workdir = workdir
        self._process: asyncio.subprocess.Process | None = None

    def command(self) -> list[str]:
        """The command line that runs the service on :attr:`port`."""
        raise NotImplementedError

    def answers(self) -> bool:
        """Whether the service answers a real request now (blocking; run in a thread)."""
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        """The process id while it runs."""
        return self._process.pid if self._process is not None else None

    async def start(self) -> None:
        """Start it and return once it answers; raises RuntimeError if it exits first or
        does not answer within a minute."""
        assert self._process is None, "already running"
        log_path = self.workdir / f"{self.name}.log"
        with log_path.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                *self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )
        process = self._process
        try:
            async with asyncio.timeout(START_TIMEOUT_SECONDS):
                while not await asyncio.to_thread(self.answers):
                    if process.returncode is not None:
                        raise RuntimeError(
                            f"{self.name} exited with code {process.returncode} at start:\n"
                            f"{_log_tail(log_path)}"
                        )
                    await asyncio.sleep(POLL_INTERVAL_SECONDS)  # a deadline loop's poll
        except TimeoutError:
            raise RuntimeError(
                f"{self.name} did not answer within {START_TIMEOUT_SECONDS:.0f} s:\n"
                f"{_log_tail(log_path)}"
            ) from None

    async def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL after 10 s); its clients see the connection drop."""
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGCONT)  # a paused process cannot handle SIGTERM
        process.terminate()
        try:
            async with asyncio.timeout(STOP_TIMEOUT_SECONDS):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()

    def pause(self) -> None:
        """SIGSTOP: connections stay open, nothing answers."""
        assert self._process is not None, "not running"
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        assert self._process is not None, "not running"
        self._process.send_signal(signal.SIGCONT)


class RedisProcess(ServiceProcess):
    """A private redis-server (no persistence) on ``port``, requiring ``password`` if given."""

    name = "redis-server"

    def __init__(self, port: int, workdir: pathlib.Path, password: str | None = None) -> None:
        super().__init__(port, workdir)
        self.password = password
        self._command = redis_server_command(port, workdir, password)
        auth = f":{password}@" if password else ""
        self.url = f"redis://{auth}127.0.0.1:{port}/0"

    def command(self) -> list[str]:
        return self._command

    def answers(self) -> bool:
        return _redis_answers(self.port, self.password)


class DynamoDBProcess(ServiceProcess):
    """A private DynamoDB Local (in memory) on ``port``: a stop loses its tables, a pause
    keeps them. Clients need the fake AWS credentials of :data:`FAKE_AWS_ENV`."""

    name = "dynamodb-local"

    def __init__(self, port: int, workdir: pathlib.Path) -> None:
        super().__init__(port, workdir)
        self._command = dynamodb_local_command(port)
        self.endpoint = f"http://127.0.0.1:{port}"

    def command(self) -> list[str]:
        return self._command

    def answers(self) -> bool:
        return _dynamodb_answers(self.endpoint)


@pytest.fixture
async def redis_process(tmp_path: pathlib.Path) -> AsyncIterator[RedisProcess]:
    """A started redis-server for this test only (to stop, restart or pause), stopped at
    its end."""
    workdir = tmp_path / "redis"
    workdir.mkdir()
    redis = RedisProcess(free_port(), workdir)
    await redis.start()
    try:
        yield redis
    finally:
        await redis.stop()
