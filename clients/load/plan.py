"""The plan of a load run: what to open, against which server, with which tokens.

:class:`LoadPlan` is the validated command line. :func:`check_loopback` refuses any server
that is not on this machine (a load generator pointed at somebody else's host is an
attack, not a test). Devices are numbered globally, phones first: device ``i`` belongs to
user ``prefix + str(i % users)`` and, past :data:`PORTS_PER_SOURCE` connections, leaves
from another loopback source address (127.0.0.2, 127.0.0.3, …) so a single host can open
more connections than one address has ephemeral ports. :class:`Tokens` signs device
tokens like ``companion token`` does (HS256; ``sub``, ``dev``, ``iat``, ``exp``, ``jti``)
or asks a command for them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import shlex
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

import jwt

WatchMode = Literal["ws", "poll", "longpoll", "legacy"]
WATCH_MODES: tuple[WatchMode, ...] = ("ws", "poll", "longpoll", "legacy")

MAX_DEVICES = 200_000
MAX_DURATION_S = 3600.0
MAX_CHANGES_PER_S = 20_000.0
MAX_IN_FLIGHT = 65_536
PORTS_PER_SOURCE = 25_000
"""Connections per loopback source address (Linux's default ephemeral range is ~28,000)."""
TOKEN_TTL_S = 6 * 3600


class PlanError(ValueError):
    """A load plan that must not run (bad bound, or a server off this machine)."""


@dataclass(frozen=True, slots=True)
class LoadPlan:
    """One run: devices, rates and bounds (see ``companion loadtest --help``)."""

    server: str = "http://127.0.0.1:8765"
    secret: str | None = None
    token_cmd: str | None = None
    phones: int = 0
    frame_rate: float = 1.0
    batch: int = 5
    watches: int = 0
    watch_mode: WatchMode = "ws"
    poll_interval: float = 30.0
    longpoll_wait: float = 25.0
    users: int = 0
    changes_per_s: float = 0.0
    max_in_flight: int = 256
    """State changes outstanding at once: a change due past it is skipped and counted."""
    ramp: float = 500.0
    duration: float = 10.0
    processes: int = 1
    phone_hello: bool = True
    prefix: str = "lt-"

    @property
    def devices(self) -> int:
        return self.phones + self.watches

    @property
    def user_count(self) -> int:
        """Distinct users: ``users`` if given, else one per device of the larger kind."""
        return self.users or max(self.phones, self.watches, 1)

    @property
    def driver_user(self) -> str:
        """The subject of the state driver's service token (it may address any user)."""
        return f"{self.prefix}driver"

    @property
    def ws_url(self) -> str:
        parts = urlsplit(self.server)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return f"{scheme}://{parts.netloc}/v1/ws"

    def user_of(self, device: int) -> str:
        """The user of global device number ``device`` (phones first, then watches)."""
        local = device if device < self.phones else device - self.phones
        return f"{self.prefix}{local % self.user_count}"

    def subscribers_of(self, user_index: int) -> int:
        """How many devices receive ``user_index``'s deltas (phones only with hello)."""
        count = 0
        if self.watch_mode == "ws":
            count += _share(self.watches, self.user_count, user_index)
        if self.phone_hello:
            count += _share(self.phones, self.user_count, user_index)
        return count

    def validate(self) -> None:
        """Raise :class:`PlanError` for a plan outside the bounds."""
        if self.devices == 0 and self.changes_per_s <= 0:
            raise PlanError("nothing to do: give --phones, --watches or --changes-per-s")
        if self.devices > MAX_DEVICES:
            raise PlanError(f"{self.devices} devices: at most {MAX_DEVICES}")
        if not 0 < self.duration <= MAX_DURATION_S:
            raise PlanError(f"duration must be in (0, {MAX_DURATION_S:g}] seconds")
        if not 0 <= self.changes_per_s <= MAX_CHANGES_PER_S:
            raise PlanError(f"changes per second must be in [0, {MAX_CHANGES_PER_S:g}]")
        if self.ramp <= 0 or self.frame_rate <= 0 or self.batch <= 0 or self.poll_interval <= 0:
            raise PlanError("ramp, frame rate, batch and poll interval must be positive")
        if self.frame_rate / self.batch > 10:
            raise PlanError("more than 10 messages/s per phone trips the server's rate limit")
        if not 1 <= self.max_in_flight <= MAX_IN_FLIGHT:
            raise PlanError(f"max in flight must be in 1..{MAX_IN_FLIGHT}")
        if not 1 <= self.processes <= 64:
            raise PlanError("processes must be in 1..64")
        if self.secret is None and self.token_cmd is None:
            raise PlanError("give --secret (the server's COMPANION_SECRET) or --token-cmd")
        check_loopback(self.server)


def _share(total: int, users: int, user_index: int) -> int:
    """How many of ``total`` devices numbered round-robin over ``users`` get ``user_index``."""
    return total // users + (1 if user_index < total % users else 0)


def check_loopback(url: str) -> str:
    """The host of ``url`` if every address it resolves to is a loopback address.

    Raises :class:`PlanError` otherwise (or if it does not resolve).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PlanError(f"server must be an http:// URL, got {url!r}")
    host = parts.hostname
    try:
        infos = socket.getaddrinfo(host, parts.port or 80, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise PlanError(f"cannot resolve {host!r}: {exc}") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_loopback:
            raise PlanError(f"refusing {host!r} ({address}): load tests target loopback only")
    return host


def source_address(device: int, host: str) -> tuple[str, int] | None:
    """The local address device number ``device`` binds to (``None``: let the kernel pick)."""
    if device < PORTS_PER_SOURCE or not host.startswith("127."):
        return None
    return (f"127.0.0.{2 + (device - PORTS_PER_SOURCE) // PORTS_PER_SOURCE}", 0)


class Tokens:
    """Device tokens per (user, device kind): signed here, or printed by ``token_cmd``."""

    def __init__(self, secret: str | None = None, token_cmd: str | None = None) -> None:
        if secret is None and token_cmd is None:
            raise PlanError("need a secret or a token command")
        self._secret = secret
        self._token_cmd = token_cmd
        self._cache: dict[tuple[str, str], str] = {}

    def sign(self, user: str, device: str) -> str:
        """A token like ``companion token USER --device DEVICE`` prints (needs the secret)."""
        assert self._secret is not None
        now = int(time.time())
        claims = {
            "sub": user,
            "dev": device,
            "iat": now,
            "exp": now + TOKEN_TTL_S,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self._secret, algorithm="HS256")

    async def get(self, user: str, device: str) -> str:
        """The token for ``user`` on a ``device``, made once and then cached."""
        key = (user, device)
        if key not in self._cache:
            if self._secret is not None:
                self._cache[key] = self.sign(user, device)
            else:
                self._cache[key] = await self._from_command(user, device)
        return self._cache[key]

    async def _from_command(self, user: str, device: str) -> str:
        assert self._token_cmd is not None
        argv = [a.format(user=user, device=device) for a in shlex.split(self._token_cmd)]
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await process.communicate()
        if process.returncode != 0 or not out.strip():
            raise PlanError(f"token command failed ({process.returncode}): {err.decode()[:200]}")
        return out.decode().strip()

    async def all_for(self, plan: LoadPlan) -> dict[tuple[str, str], str]:
        """Every token ``plan`` needs, keyed by (user, device kind)."""
        needed: set[tuple[str, str]] = set()
        for device in range(plan.devices):
            needed.add((plan.user_of(device), "phone" if device < plan.phones else "watch"))
        if plan.changes_per_s:
            needed.add((plan.driver_user, "service"))
        for user, device in sorted(needed):
            await self.get(user, device)
        return dict(self._cache)
