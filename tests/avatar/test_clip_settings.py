"""COMPANION_VIDEO, COMPANION_VEO_MODEL, COMPANION_VIDEO_* and COMPANION_AVATAR_CACHE: parsed
and checked at start, and the clip maker each value builds."""

from __future__ import annotations

import pytest

from brain.avatar.clip_local import LocalClipMaker
from brain.avatar.veo import VeoClipMaker
from server.errors import SettingsError
from server.parts import build_clip_maker
from server.settings import Settings, load


def test_defaults_are_local_clips_and_the_cache_on() -> None:
    settings = load({})

    assert (settings.video, settings.avatar_cache) == ("local", "on")
    assert (settings.video_timeout_s, settings.video_poll_s) == (360.0, 10.0)


def test_the_clip_settings_come_from_the_environment() -> None:
    settings = load(
        {
            "COMPANION_VIDEO": "veo",
            "COMPANION_VEO_MODEL": "veo-2.0-generate-001",
            "COMPANION_VIDEO_TIMEOUT_S": "120",
            "COMPANION_VIDEO_POLL_S": "5",
            "COMPANION_AVATAR_CACHE": "off",
        }
    )

    assert settings.video == "veo" and settings.veo_model == "veo-2.0-generate-001"
    assert (settings.video_timeout_s, settings.video_poll_s) == (120.0, 5.0)
    assert settings.avatar_cache == "off"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("COMPANION_VIDEO", "gif"),
        ("COMPANION_AVATAR_CACHE", "false"),
        ("COMPANION_VIDEO_TIMEOUT_S", "0"),
        ("COMPANION_VIDEO_POLL_S", "-1"),
    ],
)
def test_a_bad_value_is_a_settings_error_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load({name: value})


async def test_off_builds_no_clip_maker_and_local_the_pillow_one() -> None:
    assert build_clip_maker(Settings(video="off")) is None
    assert isinstance(build_clip_maker(Settings(video="local")), LocalClipMaker)


async def test_veo_builds_the_vertex_maker_with_the_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    monkeypatch.setenv("GOOGLE_API_KEY", "k")
    maker = build_clip_maker(
        Settings(video="veo", veo_model="veo-x", video_timeout_s=42.0, video_poll_s=3.0)
    )
    try:
        assert isinstance(maker, VeoClipMaker)
        assert (maker.model, maker.timeout_s, maker.poll_s) == ("veo-x", 42.0, 3.0)
    finally:
        assert maker is not None
        await maker.aclose()


def test_veo_without_vertex_credentials_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GOOGLE_CLOUD_PROJECT", "GOOGLE_API_KEY", "GEMINI_API_KEY"):
        monkeypatch.delenv(name, raising=False)

    with pytest.raises(ValueError, match="Vertex"):
        build_clip_maker(Settings(video="veo"))
