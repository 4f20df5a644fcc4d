"""Settings: ``COMPANION_*`` environment variables, overridden by command-line flags.

Every setting is declared once, as a field of :class:`Settings` made by :func:`setting`
(type, default, parser, help); :data:`SPECS` is derived from those fields, and the README's
configuration table lists the same names. :func:`load` validates them all at start and
raises :class:`~server.errors.SettingsError` naming the first bad one; ``companion``
turns that into a message and exit code 2. The signing secret is never printed or logged
(``Settings.__repr__`` masks it).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlparse

from brain.tiers import DEFAULT_TIERS, Tiers, parse_tiers
from server.errors import SettingsError


def _default_data_dir() -> str:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "companion")


@dataclass(frozen=True, slots=True)
class Spec:
    """One setting: its environment variable, parser and help text."""

    name: str
    parse: Callable[[str], Any]
    help: str

    @property
    def env(self) -> str:
        return "COMPANION_" + self.name.upper()


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError(f"must be a positive whole number, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"must be a whole number, zero or more, got {value}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError(f"must be 0..65535, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError(f"must be a positive number, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise ValueError(f"must be zero or more, got {text}")
    return value


def _drain_window(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 8:
        # A graceful stop lasts 10 s (server.runner.GRACEFUL_SHUTDOWN_S); the last close
        # needs up to 2 s for its closing handshake.
        raise ValueError(f"must lie in 0..8 seconds, got {text}")
    return value


def _choice(*options: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in options:
            raise ValueError(f"must be one of {', '.join(options)}; got {text!r}")
        return text

    return parse


def _broker(text: str) -> str:
    if text == "memory" or urlparse(text).scheme in ("redis", "rediss"):
        return text
    raise ValueError(f"must be 'memory' or a redis:// URL, got {text!r}")


def _media(text: str) -> str:
    if text == "local":
        return text
    parsed = urlparse(text)
    if parsed.scheme == "s3" and parsed.netloc:
        return text
    raise ValueError(f"must be 'local' or s3://bucket/prefix, got {text!r}")


def _url(text: str) -> str:
    if text == "":
        return text
    parsed = urlparse(text)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"must be an http(s) URL, got {text!r}")
    return text.rstrip("/")


def _origins(text: str) -> tuple[str, ...]:
    origins = tuple(o.strip().rstrip("/") for o in text.split(",") if o.strip())
    for origin in origins:
        if origin != "*" and not _url(origin):
            raise ValueError(f"bad origin {origin!r}")
    return origins


def _secret(text: str) -> str:
    if len(text) < 32:
        raise ValueError("must be at least 32 characters")
    return text


def _lease_ms(text: str) -> int:
    value = _positive_int(text)
    if value < 300:
        raise ValueError(f"must be at least 300 ms, got {text}")
    return value


def _prefix(text: str) -> str:
    if not text or len(text) > 64 or not all(c.isalnum() or c in "-_." for c in text):
        raise ValueError("must be 1-64 characters of letters, digits, '-', '_', '.'")
    return text


def setting(
    parse: Callable[[str], Any],
    help: str,
    *,
    default: Any = MISSING,
    default_factory: Callable[[], Any] | Any = MISSING,
    repr: bool = True,
) -> Any:
    """A :class:`Settings` field: its default, the parser of its ``COMPANION_*`` text (raises
    ValueError with the reason) and its help text (the README's configuration table)."""
    return field(
        default=default,
        default_factory=default_factory,
        repr=repr,
        metadata={"parse": parse, "help": help},
    )


@dataclass(frozen=True, slots=True)
class Settings:
    """Validated settings of one server process; each field is declared once, with its parser
    and help text (:func:`setting`), and read from ``COMPANION_<NAME>``."""

    host: str = setting(str, "Interface to listen on.", default="127.0.0.1")
    port: int = setting(_port, "TCP port to listen on.", default=8000)
    data_dir: Path = setting(
        lambda t: Path(t).expanduser(),
        "Where the SQLite file, secret and media live.",
        default_factory=lambda: Path(_default_data_dir()),
    )
    public_url: str = setting(
        _url, "URL devices reach the server at (image URLs start with it).", default=""
    )
    secret: str = setting(
        _secret,
        "Token signing secret; default: a file `secret` in the data dir.",
        default="",
        repr=False,
    )
    store: str = setting(_choice("sqlite", "dynamodb"), "Store adapter.", default="sqlite")
    table_prefix: str = setting(
        _prefix, "DynamoDB table-name prefix (one per environment).", default="companion-dev-"
    )
    frame_retention_days: int = setting(
        _positive_int, "How long frames are kept (TTL).", default=30
    )
    history_retention_days: int = setting(
        _positive_int,
        "How long decision-history events are kept (TTL; SQLite purges hourly).",
        default=90,
    )
    broker: str = setting(
        _broker, "`memory` (one node) or a `redis://` URL (several nodes).", default="memory"
    )
    broker_heartbeat_s: float = setting(
        _positive_float,
        "With a Redis broker: seconds between the subscriber's PINGs; three without an answer"
        " and it reconnects (and the node resyncs its devices).",
        default=1.0,
    )
    broker_timeout_s: float = setting(
        _positive_float,
        "With a Redis broker: seconds a connect or a command (subscribe, publish) may take before"
        " it counts as failed (the analysis leases keep their own, from the lease time).",
        default=2.0,
    )
    allowed_origins: tuple[str, ...] = setting(
        _origins, "Comma-separated browser origins allowed besides the server's own.", default=()
    )
    ping_interval: float = setting(
        _positive_float, "Seconds between keepalive pings.", default=45.0
    )
    ping_timeout: float = setting(
        _positive_float, "Seconds a pong may take before the peer counts as dead.", default=20.0
    )
    write_timeout: float = setting(
        _positive_float, "Seconds a send may block before the peer is closed as slow.", default=10.0
    )
    handshake_timeout_s: float = setting(
        _positive_float,
        "Seconds a connection has to send a whole HTTP request or WebSocket upgrade.",
        default=10.0,
    )
    admit_rate: float = setting(
        _positive_float,
        "WebSocket handshakes a node admits per second (token bucket); the excess is answered"
        " 503 with a Retry-After appointment (kept for that device) before any token check.",
        default=1800.0,
    )
    admit_burst: int = setting(
        _positive_int, "Handshakes admitted at once before the admit rate applies.", default=20
    )
    penalty_s: float = setting(
        _non_negative_float,
        "Seconds an address is first refused new connections once it was closed for abuse"
        " COMPANION_PENALTY_STRIKES times within COMPANION_PENALTY_WINDOW_S (fragment flood,"
        " rate limit, oversize, bad framing, handshake timeout); doubles on each repeat up to"
        " COMPANION_PENALTY_MAX_S. 0 turns the penalty box off.",
        default=1.0,
    )
    penalty_max_s: float = setting(
        _positive_float,
        "Longest period an address is refused (the penalties' cap; one level is forgiven per"
        " this many seconds without abuse).",
        default=30.0,
    )
    penalty_strikes: int = setting(
        _positive_int,
        "Abuse closes from one address (IPv6: one /64) within COMPANION_PENALTY_WINDOW_S"
        " before it is refused: high enough that one abuser behind a shared carrier address"
        " does not lock its neighbours out for a slip.",
        default=10,
    )
    penalty_window_s: float = setting(
        _positive_float, "Seconds over which abuse closes are counted.", default=10.0
    )
    drain_s: float = setting(
        _drain_window,
        "Longest window (0-8 s) over which a graceful stop spreads its clients' 1012 closes"
        " (shorter when the clients can return within it at the admit rate).",
        default=5.0,
    )
    outbox_limit: int = setting(
        _positive_int, "Messages pending per connection before it is closed as slow.", default=64
    )
    rate_per_s: float = setting(
        _positive_float,
        "Messages per second a WebSocket connection of the default tier (or a service token)"
        " may send (token bucket); other tiers get their ws_rate_per_s, never less"
        " (COMPANION_TIERS).",
        default=20.0,
    )
    rate_burst: int = setting(
        _positive_int, "Burst size of that token bucket (other tiers: ws_rate_burst).", default=60
    )
    rest_rate_per_s: float = setting(
        _positive_float,
        "REST requests per second per device token (user and kind; service: unlimited); a "
        "ceiling on the default tier's (COMPANION_TIERS).",
        default=5.0,
    )
    rest_rate_burst: int = setting(
        _positive_int, "Burst size of that REST token bucket.", default=30
    )
    max_frame_age_s: int = setting(
        _positive_int,
        "Oldest frame a device may send (service tokens: unlimited).",
        default=7 * 24 * 3600,
    )
    analyst: str = setting(
        _choice("rules", "anthropic", "bedrock"), "Who assesses a window.", default="rules"
    )
    anthropic_model: str = setting(
        str, "Claude model id for the Anthropic API.", default="claude-haiku-4-5"
    )
    bedrock_model: str = setting(
        str,
        "Claude model id on Bedrock (eu-central-1).",
        default="eu.anthropic.claude-haiku-4-5-20251001-v1:0",
    )
    llm_daily_budget_usd: float = setting(
        _non_negative_float, "Per-user daily LLM spend; then rules answer.", default=0.50
    )
    tiers: Tiers = setting(
        parse_tiers,
        "Tiers and their limits, JSON `{name: {limit: value}}` over the built-in `free` and "
        "`premium` (docs/cost.md).",
        default_factory=lambda: DEFAULT_TIERS,
    )
    window_minutes: int = setting(
        _positive_int, "Minutes of frames an analysis looks at.", default=15
    )
    debounce_ms: int = setting(
        _positive_int, "Quiet time after frames before an analysis starts.", default=1000
    )
    analysis_workers: int = setting(_positive_int, "Analyses running at once.", default=4)
    owner_lease_ms: int = setting(
        _lease_ms,
        "With a Redis broker: lease of a node on a user's analysis (its owner); a dead"
        " owner's users move to another node within this time.",
        default=10_000,
    )
    state_cache_users: int = setting(
        _non_negative_int,
        "Users whose current state a node keeps in memory (LRU, ~0.9 KiB each), so a commit"
        " needs no read; 0 reads the store every time.",
        default=100_000,
    )
    avatar: str = setting(_choice("local", "gemini"), "Avatar generator.", default="local")
    gemini_model: str = setting(str, "Gemini image model id.", default="gemini-2.5-flash-image")
    media: str = setting(
        _media, "`local` (served at /media) or s3://bucket/prefix.", default="local"
    )
    media_public_url: str = setting(
        _url, "Public base URL of the S3 media (CDN); default: presigned URLs.", default=""
    )
    avatar_workers: int = setting(_positive_int, "Avatar generations running at once.", default=2)
    avatar_cache: str = setting(
        _choice("on", "off"),
        "`off` bypasses avatar cache reads (every change generates; entries are still written).",
        default="on",
    )
    avatar_lease_s: float = setting(
        _positive_float,
        "Seconds a node holds an avatar saga without renewing; then another node resumes it.",
        default=120.0,
    )
    video: str = setting(
        _choice("off", "local", "veo"),
        "Avatar clips: `off`, `local` (Pillow, animated WebP) or `veo` (Vertex AI).",
        default="local",
    )
    veo_model: str = setting(
        str,
        "Veo model id on Vertex AI (`COMPANION_VIDEO=veo`).",
        default="veo-3.0-fast-generate-001",
    )
    video_timeout_s: float = setting(
        _positive_float, "Deadline of one clip (Veo: submit and polling).", default=360.0
    )
    video_poll_s: float = setting(
        _positive_float, "Seconds between polls of a Veo operation.", default=10.0
    )
    log_level: str = setting(
        _choice("debug", "info", "warning", "error"), "Log level.", default="info"
    )

    @property
    def base_url(self) -> str:
        """The URL clients reach this server at (``public_url``, or built from host/port)."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "companion.sqlite3"

    @property
    def media_dir(self) -> Path:
        return self.data_dir / "media"

    @property
    def secret_path(self) -> Path:
        return self.data_dir / "secret"


SPECS: Final[tuple[Spec, ...]] = tuple(
    Spec(f.name, f.metadata["parse"], f.metadata["help"]) for f in fields(Settings)
)
"""Every setting, in declaration order, derived from :class:`Settings`' fields."""


def load(
    environ: Mapping[str, str] | None = None, overrides: Mapping[str, str | None] | None = None
) -> Settings:
    """Settings from ``environ`` (default ``os.environ``), then ``overrides`` (CLI flags).

    Raises :class:`SettingsError` for the first value that does not parse.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for spec in SPECS:
        raw = environ.get(spec.env)
        source = spec.env
        if overrides is not None and overrides.get(spec.name) is not None:
            raw = overrides[spec.name]
            source = "--" + spec.name.replace("_", "-")
        if raw is None:
            continue
        try:
            values[spec.name] = spec.parse(raw)
        except ValueError as exc:
            shown = "<hidden>" if spec.name == "secret" else repr(raw)
            raise SettingsError(source, f"{exc} (value {shown})") from None
    settings = Settings(**values)
    if settings.ping_timeout >= settings.ping_interval * 4:
        raise SettingsError("COMPANION_PING_TIMEOUT", "must be well below the ping interval")
    return settings


def ensure_secret(settings: Settings) -> Settings:
    """Settings whose ``secret`` is set: the given one, or the data dir's file (created 0600).

    Raises :class:`SettingsError` if the secret file is unreadable or too short.
    """
    if settings.secret:
        return settings
    path = settings.secret_path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: two processes starting at once never write two different secrets.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise SettingsError("COMPANION_DATA_DIR", f"cannot create {path}: {exc}") from None
    else:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(48))
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise SettingsError("COMPANION_DATA_DIR", f"cannot read {path}: {exc}") from None
    if len(text) < 32:
        raise SettingsError("COMPANION_DATA_DIR", f"{path} holds a secret shorter than 32 chars")
    return replace(settings, secret=text)
