"""Settings: environment parsing, validation errors, the CLI exit code, the secret file."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from server.errors import SettingsError
from server.settings import SPECS, Settings, ensure_secret, load

LONG_SECRET = "s" * 40


def test_defaults_without_environment() -> None:
    settings = load({})
    assert settings.port == 8000
    assert settings.store == "sqlite"
    assert settings.broker == "memory"
    assert settings.secret == ""


def test_environment_values_are_parsed() -> None:
    settings = load(
        {
            "COMPANION_PORT": "9001",
            "COMPANION_DATA_DIR": "/tmp/somewhere",
            "COMPANION_WRITE_TIMEOUT": "0.5",
            "COMPANION_OUTBOX_LIMIT": "8",
            "COMPANION_ALLOWED_ORIGINS": "https://a.example/, https://b.example",
            "COMPANION_BROKER": "redis://localhost:6379/0",
            "COMPANION_PUBLIC_URL": "https://push.example/",
            "COMPANION_SECRET": LONG_SECRET,
            "COMPANION_LOG_LEVEL": "debug",
        }
    )
    assert settings.port == 9001
    assert settings.data_dir == Path("/tmp/somewhere")
    assert settings.write_timeout == 0.5
    assert settings.outbox_limit == 8
    assert settings.allowed_origins == ("https://a.example", "https://b.example")
    assert settings.broker == "redis://localhost:6379/0"
    assert settings.public_url == "https://push.example"
    assert settings.base_url == "https://push.example"
    assert settings.secret == LONG_SECRET
    assert settings.log_level == "debug"


def test_overrides_beat_the_environment() -> None:
    settings = load({"COMPANION_PORT": "9001"}, {"port": "9002", "host": None})
    assert settings.port == 9002
    assert settings.host == "127.0.0.1"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("COMPANION_PORT", "eighty"),
        ("COMPANION_PORT", "70000"),
        ("COMPANION_OUTBOX_LIMIT", "0"),
        ("COMPANION_WRITE_TIMEOUT", "-1"),
        ("COMPANION_RATE_PER_S", "nan-ish"),
        ("COMPANION_STORE", "postgres"),
        ("COMPANION_BROKER", "amqp://x"),
        ("COMPANION_MEDIA", "s3://"),
        ("COMPANION_PUBLIC_URL", "ftp://x"),
        ("COMPANION_ALLOWED_ORIGINS", "not-a-url"),
        ("COMPANION_TABLE_PREFIX", "bad prefix"),
        ("COMPANION_LOG_LEVEL", "loud"),
        ("COMPANION_LLM_DAILY_BUDGET_USD", "-0.1"),
    ],
)
def test_a_bad_value_names_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as err:
        load({variable: value})
    assert err.value.name == variable
    assert variable in str(err.value)


def test_a_bad_flag_names_the_flag() -> None:
    with pytest.raises(SettingsError) as err:
        load({}, {"port": "x"})
    assert err.value.name == "--port"


def test_a_short_secret_is_refused_without_showing_it() -> None:
    with pytest.raises(SettingsError) as err:
        load({"COMPANION_SECRET": "short-secret-value"})
    assert err.value.name == "COMPANION_SECRET"
    assert "short-secret-value" not in str(err.value)


def test_ping_timeout_must_be_below_the_interval() -> None:
    with pytest.raises(SettingsError) as err:
        load({"COMPANION_PING_INTERVAL": "1", "COMPANION_PING_TIMEOUT": "10"})
    assert err.value.name == "COMPANION_PING_TIMEOUT"


def test_every_spec_has_a_companion_variable() -> None:
    assert all(spec.env == "COMPANION_" + spec.name.upper() for spec in SPECS)


def test_the_secret_is_never_in_the_repr() -> None:
    settings = load({"COMPANION_SECRET": LONG_SECRET})
    assert LONG_SECRET not in repr(settings)
    assert LONG_SECRET not in str(settings)


def test_ensure_secret_creates_a_private_file_and_reuses_it(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    first = ensure_secret(settings)
    path = settings.secret_path
    assert path.exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first.secret) >= 32
    assert path.read_text().strip() == first.secret
    second = ensure_secret(settings)
    assert second.secret == first.secret
    assert first.secret not in repr(first)


def test_ensure_secret_keeps_a_given_secret(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", secret=LONG_SECRET)
    assert ensure_secret(settings) is settings
    assert not settings.secret_path.exists()


def test_ensure_secret_refuses_a_short_secret_file(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    settings.secret_path.write_text("too short")
    with pytest.raises(SettingsError) as err:
        ensure_secret(settings)
    assert err.value.name == "COMPANION_DATA_DIR"


def test_cli_serve_with_a_bad_port_exits_2(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPANION_")}
    env.update({"COMPANION_PORT": "not-a-port", "COMPANION_DATA_DIR": str(tmp_path)})
    result = subprocess.run(
        [sys.executable, "-m", "server.cli", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "COMPANION_PORT" in result.stderr
