"""The embedded clip maker: a small looping animated WebP of the pet, drawn with Pillow."""

from __future__ import annotations

import io
import itertools
import threading

import pytest
from PIL import Image, ImageChops

from brain.avatar import clip_local, local
from brain.avatar.clip import LOOP_DIRECTION, Clip, clip_prompt
from brain.avatar.clip_local import CLIP_SIZE, FRAME_MS, FRAMES, LocalClipMaker
from brain.avatar.prompt import AvatarSpec

MAX_BYTES = 100 * 1024
"""The promise to watches: a clip is at most 100 KB."""

SPECS = [
    AvatarSpec.of("exercising", "energized", 90, "fox"),
    AvatarSpec.of("sleeping", "sleepy", 20, "cat"),
    AvatarSpec.of("stressed", "anxious", 50, "panda"),
    AvatarSpec.of("calm", "content", 70, "rabbit"),
    AvatarSpec.of("fatigued", "tired", 10, "bear"),
    AvatarSpec.of("resting", "happy", 60, "fox"),
]


async def make(spec: AvatarSpec) -> Clip:
    return await LocalClipMaker().make_clip("ignored", spec, None)


def frames_of(data: bytes) -> list[Image.Image]:
    frames = []
    with Image.open(io.BytesIO(data)) as clip:
        for index in range(clip.n_frames):
            clip.seek(index)
            frames.append(clip.convert("RGB"))
    return frames


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.state.value}-{s.base_avatar.value}")
async def test_a_clip_is_a_looping_webp_of_256_px_1_5_s_and_at_most_100_kb(
    spec: AvatarSpec,
) -> None:
    clip = await make(spec)

    assert clip.content_type == "image/webp"
    assert len(clip.data) <= MAX_BYTES
    with Image.open(io.BytesIO(clip.data)) as image:
        assert image.format == "WEBP"
        assert image.size == (CLIP_SIZE, CLIP_SIZE) == (256, 256)
        assert image.n_frames == FRAMES
        assert image.info["loop"] == 0  # for ever
        durations = []
        for index in range(image.n_frames):
            image.seek(index)
            image.load()  # the frame's duration is known once it is decoded
            durations.append(image.info["duration"])
    assert durations == [FRAME_MS] * FRAMES
    assert 1000 <= sum(durations) <= 2000


def moved(before: Image.Image, after: Image.Image) -> tuple[int, int, int, int] | None:
    """The box of the pixels that changed clearly (lossy WebP noise is ignored)."""
    difference = ImageChops.difference(before, after).convert("L")
    return difference.point(lambda value: 255 if value > 40 else 0).getbbox()


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.state.value}-{s.base_avatar.value}")
async def test_the_pet_moves_from_each_frame_to_the_next(spec: AvatarSpec) -> None:
    frames = frames_of((await make(spec)).data)

    assert all(moved(a, b) is not None for a, b in itertools.pairwise(frames))


async def test_an_exercising_pet_hops_higher_than_a_sleeping_one_breathes() -> None:
    def height(frames: list[Image.Image]) -> int:
        boxes = [moved(frames[0], frame) for frame in frames[1:]]
        return max(box[3] - box[1] for box in boxes if box is not None)

    hopping = frames_of((await make(SPECS[0])).data)
    sleeping = frames_of((await make(SPECS[1])).data)

    # The hop moves rows all over the pet; breathing only its top.
    assert height(hopping) > 1.5 * height(sleeping)


async def test_the_clip_shows_the_scene_of_the_still_image() -> None:
    spec = SPECS[0]
    frame = frames_of((await make(spec)).data)[0]
    still = local.render(spec, CLIP_SIZE)

    for corner in ((4, 4), (CLIP_SIZE - 5, 4)):
        got, want = frame.getpixel(corner), still.getpixel(corner)
        assert isinstance(got, tuple) and isinstance(want, tuple)
        assert all(abs(a - b) <= 8 for a, b in zip(got, want, strict=True))


async def test_the_same_spec_gives_byte_identical_clips() -> None:
    assert (await make(SPECS[2])).data == (await make(SPECS[2])).data


async def test_different_states_give_different_clips() -> None:
    assert (await make(SPECS[0])).data != (await make(SPECS[3])).data


async def test_drawing_runs_in_a_worker_thread_not_on_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    threads: list[threading.Thread] = []
    real = clip_local.render_clip

    def recording(spec: AvatarSpec) -> bytes:
        threads.append(threading.current_thread())
        return real(spec)

    monkeypatch.setattr(clip_local, "render_clip", recording)
    await make(SPECS[0])

    assert len(threads) == 1 and threads[0] is not threading.current_thread()


def test_a_clip_needs_bytes_and_a_playable_type() -> None:
    with pytest.raises(ValueError, match="bytes"):
        Clip(b"", "image/webp", "m")
    with pytest.raises(ValueError, match="clip type"):
        Clip(b"x", "text/html", "m")


def test_the_clip_prompt_is_the_image_prompt_asking_for_a_still_camera_loop() -> None:
    prompt = clip_prompt("A fox cub, kawaii style. ")

    assert prompt == "A fox cub, kawaii style." + LOOP_DIRECTION
    assert "loop" in prompt and "camera" in prompt
