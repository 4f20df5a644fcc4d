"""The local Pillow renderer: real PNGs at the promised sizes, deterministic, telling."""

from __future__ import annotations

import io
import struct
import threading

import pytest
from PIL import Image

from brain.avatar import local
from brain.avatar.base import PHONE_SIZE, WATCH_SIZE, GeneratedImage
from brain.avatar.local import LocalRenderer
from brain.avatar.prompt import AvatarSpec, Species, build_prompt
from brain.model import EnergyBand, Mood, State
from tests.avatar.specs import spec


async def generate(avatar: AvatarSpec) -> GeneratedImage:
    return await LocalRenderer().generate(build_prompt(avatar), avatar)


def opened(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()
    return image


def chunk_types(png: bytes) -> list[bytes]:
    """The chunk types of a PNG, in order."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    types, offset = [], 8
    while offset < len(png):
        (length,) = struct.unpack(">I", png[offset : offset + 4])
        types.append(png[offset + 4 : offset + 8])
        offset += 12 + length
    return types


@pytest.mark.parametrize("species", list(Species))
async def test_phone_and_watch_pngs_open_with_pillow_at_the_promised_sizes(
    species: Species,
) -> None:
    image = await generate(spec(base_avatar=species))

    phone, watch = opened(image.phone_png), opened(image.watch_png)
    assert (phone.format, phone.size) == ("PNG", (PHONE_SIZE, PHONE_SIZE))
    assert (watch.format, watch.size) == ("PNG", (WATCH_SIZE, WATCH_SIZE))
    assert (PHONE_SIZE, WATCH_SIZE) == (512, 192)


async def test_the_same_spec_gives_byte_identical_pngs() -> None:
    first = await generate(spec(state=State.STRESSED, mood=Mood.ANXIOUS))
    second = await generate(spec(state=State.STRESSED, mood=Mood.ANXIOUS))

    assert first.phone_png == second.phone_png
    assert first.watch_png == second.watch_png


async def test_pngs_carry_no_time_or_text_metadata() -> None:
    image = await generate(spec())

    for png in (image.phone_png, image.watch_png):
        assert set(chunk_types(png)) == {b"IHDR", b"IDAT", b"IEND"}


@pytest.mark.parametrize(
    ("field", "values"),
    [
        ("state", list(State)),
        ("mood", list(Mood)),
        ("band", list(EnergyBand)),
        ("base_avatar", list(Species)),
    ],
)
async def test_every_value_of_a_field_draws_a_different_picture(
    field: str, values: list[object]
) -> None:
    pictures = {(await generate(spec(**{field: value}))).phone_png for value in values}

    assert len(pictures) == len(values)


async def test_states_differ_on_the_watch_too() -> None:
    calm = await generate(spec(state=State.CALM))
    sleeping = await generate(spec(state=State.SLEEPING))

    assert calm.watch_png != sleeping.watch_png


async def test_the_scene_colour_follows_the_state() -> None:
    calm = opened((await generate(spec(state=State.CALM))).phone_png).convert("RGB")
    sleeping = opened((await generate(spec(state=State.SLEEPING))).phone_png).convert("RGB")

    corner = (4, 4)
    assert calm.getpixel(corner) == (200, 236, 214)  # soft mint
    assert sleeping.getpixel(corner) == (40, 52, 96)  # night blue


async def test_drawing_runs_in_a_worker_thread_not_on_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    threads: list[threading.Thread] = []
    real = local.render_pngs

    def recording(avatar: AvatarSpec) -> tuple[bytes, bytes]:
        threads.append(threading.current_thread())
        return real(avatar)

    monkeypatch.setattr(local, "render_pngs", recording)
    await generate(spec())

    assert len(threads) == 1
    assert threads[0] is not threading.current_thread()


async def test_generated_image_names_the_local_model() -> None:
    image = await generate(spec())

    assert image.model == local.MODEL_NAME
