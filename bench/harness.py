"""What every benchmark shares: servers as subprocesses, RSS, the machine, result files.

:class:`ServerProcess` starts a server command on a free loopback port with
``COMPANION_LOG_LEVEL=warning`` and a known secret, waits until it answers (HTTP on its
health path, within a deadline), and stops it through its ``Popen`` handle (SIGTERM, then
SIGKILL). :func:`rss_kib` reads a process's resident set from ``/proc``. :func:`write_results`
puts ``bench/results/NAME.json`` (gitignored) and ``NAME.md`` (kept) side by side, the
Markdown headed by the command and the machine.
"""

from __future__ import annotations

import gc
import os
import platform
import shlex
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from clients.load.loadtest import raise_fd_limit

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
REPO_ROOT = BENCH_DIR.parent
SECRET = "bench-secret-" + "b" * 40
START_TIMEOUT_S = 60.0
_LOAD_AT_START = os.getloadavg()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def rss_kib(pid: int) -> int:
    """Resident set size of process ``pid`` in KiB (``VmRSS`` of ``/proc/PID/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ServerProcess:
    """A server subprocess on ``127.0.0.1:port``; use as a context manager."""

    def __init__(
        self,
        argv: list[str],
        *,
        port: int,
        health: str = "/healthz",
        env: dict[str, str] | None = None,
        name: str = "server",
    ) -> None:
        self.argv = argv
        self.port = port
        self.health = health
        self.name = name
        self.url = f"http://127.0.0.1:{port}"
        self._data = tempfile.TemporaryDirectory(prefix=f"bench-{name}-")
        self.env = {
            **os.environ,
            "COMPANION_LOG_LEVEL": "warning",
            "COMPANION_SECRET": SECRET,
            "COMPANION_DATA_DIR": self._data.name,
            "PYTHONPATH": str(REPO_ROOT),
            **(env or {}),
        }
        self._log = Path(self._data.name) / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    @classmethod
    def companion(cls, env: dict[str, str] | None = None) -> ServerProcess:
        """``companion serve`` (uvloop, httptools, sans-I/O websockets) on a free port."""
        port = free_port()
        argv = [sys.executable, "-m", "server.cli", "serve", "--port", str(port)]
        return cls(argv, port=port, health="/readyz", env=env, name="companion")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def __enter__(self) -> ServerProcess:
        raise_fd_limit()  # inherited by the child
        with self._log.open("wb") as log:
            self.process = subprocess.Popen(
                self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + self.health, timeout=1) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError(f"{self.name} did not answer in {START_TIMEOUT_S} s")
            time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._data.cleanup()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


def settle_memory() -> None:
    """Collect garbage in this process (the load generator) before a memory reading."""
    gc.collect()


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import uvicorn
    import uvloop
    import websockets

    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": round(mem_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "uvloop": uvloop.__version__,
        "websockets": websockets.__version__,
        "uvicorn": uvicorn.__version__,
        "kernel": platform.release(),
        "loadavg_before": _LOAD_AT_START,
    }


def command_line() -> str:
    """How this benchmark was started (``python -m bench.NAME ARGS``)."""
    script = Path(sys.argv[0]).resolve()
    if script.parent == BENCH_DIR:
        return shlex.join(["python", "-m", f"bench.{script.stem}", *sys.argv[1:]])
    return shlex.join(["python", *sys.argv])


def write_results(name: str, data: dict[str, Any], markdown: str) -> Path:
    """Write ``results/NAME.json`` and ``results/NAME.md``; return the Markdown path."""
    RESULTS_DIR.mkdir(exist_ok=True)
    info = data.setdefault("machine", machine())
    info["loadavg_after"] = os.getloadavg()
    data.setdefault("command", command_line())
    data.setdefault("finished", time.strftime("%Y-%m-%d %H:%M:%S %Z"))
    (RESULTS_DIR / f"{name}.json").write_bytes(
        orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
    )
    header = (
        f"<!-- written by {data['command']} at {data['finished']} -->\n\n"
        f"Command: `{data['command']}`\n\n"
        f"Machine: {info['nproc']} CPUs ({info['cpu']}), {info['ram_gib']} GiB RAM, "
        f"Python {info['python']}, uvloop {info['uvloop']}, websockets {info['websockets']}, "
        f"uvicorn {info['uvicorn']}; load average before "
        f"{' '.join(f'{x:.2f}' for x in info['loadavg_before'])}, after "
        f"{' '.join(f'{x:.2f}' for x in info['loadavg_after'])}.\n\n"
    )
    path = RESULTS_DIR / f"{name}.md"
    path.write_text(header + markdown.rstrip() + "\n")
    return path


COUNTED = (
    "companion_state_commits_total",
    "companion_state_reads_total",
    "companion_state_conflicts_total",
    "companion_avatar_cache_total",
)
"""The server's counters a benchmark reports at its end (commits, state reads by source,
conflicts, avatar cache lookups), read from ``/metrics``."""


def scrape(url: str) -> dict[str, float]:
    """The :data:`COUNTED` counters from the server's ``/metrics`` (by name and label set);
    empty when the server does not answer within 5 s."""
    try:
        with urllib.request.urlopen(url + "/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return {}
    found: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name.split("{")[0] in COUNTED:
            found[name] = found.get(name, 0.0) + float(value)
    return found


def load_average() -> str:
    """The machine's 1, 5 and 15 minute load averages (a shared machine's figures vary)."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def counters_line(metrics: dict[str, float]) -> str:
    """The scraped counters in one table cell: ``name{labels} value; …`` (short names)."""
    if not metrics:
        return "-"
    return "; ".join(
        f"{name.removeprefix('companion_').replace('_total', '')} {value:g}"
        for name, value in sorted(metrics.items())
    )
