"""Settings: ``COMPANION_*`` environment variables, overridden by command-line flags.

Every setting is declared once in :data:`SPECS` (name, type, default, help); the README's
configuration table lists the same names. :func:`load` validates them all at start and
raises :class:`~server.errors.SettingsError` naming the first bad one; ``companion``
turns that into a message and exit code 2. The signing secret is never printed or logged
(``Settings.__repr__`` masks it).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlparse

from server.errors import SettingsError


def _default_data_dir() -> str:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "companion")


@dataclass(frozen=True, slots=True)
class Settings:
    """Validated settings of one server process."""

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = field(default_factory=lambda: Path(_default_data_dir()))
    public_url: str = ""
    secret: str = field(default="", repr=False)
    store: str = "sqlite"
    table_prefix: str = "companion-dev-"
    frame_retention_days: int = 30
    broker: str = "memory"
    allowed_origins: tuple[str, ...] = ()
    ping_interval: float = 45.0
    ping_timeout: float = 20.0
    write_timeout: float = 10.0
    outbox_limit: int = 64
    rate_per_s: float = 20.0
    rate_burst: int = 60
    max_frame_age_s: int = 7 * 24 * 3600
    analyst: str = "rules"
    anthropic_model: str = "claude-haiku-4-5"
    bedrock_model: str = "eu.anthropic.claude-haiku-4-5-20251001-v1:0"
    llm_daily_budget_usd: float = 0.50
    window_minutes: int = 15
    debounce_ms: int = 1000
    analysis_workers: int = 4
    owner_lease_ms: int = 10_000
    avatar: str = "local"
    gemini_model: str = "gemini-2.5-flash-image"
    media: str = "local"
    media_public_url: str = ""
    avatar_workers: int = 2
    log_level: str = "info"

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


SPECS: Final[tuple[Spec, ...]] = (
    Spec("host", str, "Interface to listen on."),
    Spec("port", _port, "TCP port to listen on."),
    Spec(
        "data_dir", lambda t: Path(t).expanduser(), "Where the SQLite file, secret and media live."
    ),
    Spec("public_url", _url, "URL devices reach the server at (image URLs start with it)."),
    Spec("secret", _secret, "Token signing secret; default: a file `secret` in the data dir."),
    Spec("store", _choice("sqlite", "dynamodb"), "Store adapter."),
    Spec("table_prefix", _prefix, "DynamoDB table-name prefix (one per environment)."),
    Spec("frame_retention_days", _positive_int, "How long frames are kept (TTL)."),
    Spec("broker", _broker, "`memory` (one node) or a `redis://` URL (several nodes)."),
    Spec(
        "allowed_origins",
        _origins,
        "Comma-separated browser origins allowed besides the server's own.",
    ),
    Spec("ping_interval", _positive_float, "Seconds between keepalive pings."),
    Spec(
        "ping_timeout", _positive_float, "Seconds a pong may take before the peer counts as dead."
    ),
    Spec(
        "write_timeout",
        _positive_float,
        "Seconds a send may block before the peer is closed as slow.",
    ),
    Spec(
        "outbox_limit",
        _positive_int,
        "Messages pending per connection before it is closed as slow.",
    ),
    Spec(
        "rate_per_s", _positive_float, "Messages per second a connection may send (token bucket)."
    ),
    Spec("rate_burst", _positive_int, "Burst size of that token bucket."),
    Spec(
        "max_frame_age_s",
        _positive_int,
        "Oldest frame a device may send (service tokens: unlimited).",
    ),
    Spec("analyst", _choice("rules", "anthropic", "bedrock"), "Who assesses a window."),
    Spec("anthropic_model", str, "Claude model id for the Anthropic API."),
    Spec("bedrock_model", str, "Claude model id on Bedrock (eu-central-1)."),
    Spec(
        "llm_daily_budget_usd", _non_negative_float, "Per-user daily LLM spend; then rules answer."
    ),
    Spec("window_minutes", _positive_int, "Minutes of frames an analysis looks at."),
    Spec("debounce_ms", _positive_int, "Quiet time after frames before an analysis starts."),
    Spec("analysis_workers", _positive_int, "Analyses running at once."),
    Spec(
        "owner_lease_ms",
        _lease_ms,
        "With a Redis broker: lease of a node on a user's analysis (its owner); a dead"
        " owner's users move to another node within this time.",
    ),
    Spec("avatar", _choice("local", "gemini"), "Avatar generator."),
    Spec("gemini_model", str, "Gemini image model id."),
    Spec("media", _media, "`local` (served at /media) or s3://bucket/prefix."),
    Spec(
        "media_public_url", _url, "Public base URL of the S3 media (CDN); default: presigned URLs."
    ),
    Spec("avatar_workers", _positive_int, "Avatar generations running at once."),
    Spec("log_level", _choice("debug", "info", "warning", "error"), "Log level."),
)

_FIELD_NAMES: Final = frozenset(f.name for f in fields(Settings))
assert {s.name for s in SPECS} == _FIELD_NAMES, "every setting needs a Spec"


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
