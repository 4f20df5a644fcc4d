"""VeoClipMaker with the real google-genai SDK (Vertex mode) against the local fake Vertex API."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator

import pytest

from brain.avatar.clip import LOOP_DIRECTION
from brain.avatar.errors import GenerationError
from brain.avatar.prompt import AvatarSpec, build_prompt
from brain.avatar.veo import DEFAULT_MODEL, MAX_CLIP_BYTES, VeoClipMaker, checked_clip
from tests.fakes.gemini_api import sample_png
from tests.fakes.vertex_api import API_KEY, FakeVertexApi, sample_mp4

SPEC = AvatarSpec.of("exercising", "energized", 90, "fox")
PROMPT = build_prompt(SPEC)
STILL = sample_png(64)


@pytest.fixture
def vertex() -> Iterator[FakeVertexApi]:
    with FakeVertexApi() as api:
        yield api


@pytest.fixture
async def maker(vertex: FakeVertexApi) -> AsyncIterator[VeoClipMaker]:
    maker = VeoClipMaker(
        api_key=API_KEY, base_url=vertex.base_url, timeout_s=10, poll_s=0.01, request_timeout_s=5
    )
    yield maker
    await maker.aclose()


async def failure(maker: VeoClipMaker, still: bytes | None = STILL) -> GenerationError:
    with pytest.raises(GenerationError) as caught:
        await maker.make_clip(PROMPT, SPEC, still)
    return caught.value


async def test_the_clip_comes_back_as_the_mp4_bytes_once_the_operation_is_done(
    maker: VeoClipMaker, vertex: FakeVertexApi
) -> None:
    vertex.polls_before_done = 2

    clip = await maker.make_clip(PROMPT, SPEC, STILL)

    sent = vertex.submitted()[0].body["instances"][0]["prompt"]
    assert clip.data == sample_mp4(sent)
    assert (clip.content_type, clip.model) == ("video/mp4", DEFAULT_MODEL)
    assert (vertex.submits, vertex.polls) == (1, 3)


async def test_the_submit_is_vertex_express_mode_with_prompt_still_and_config(
    maker: VeoClipMaker, vertex: FakeVertexApi
) -> None:
    await maker.make_clip(PROMPT, SPEC, STILL)

    submit = vertex.submitted()[0]
    assert submit.path == f"/v1beta1/publishers/google/models/{DEFAULT_MODEL}:predictLongRunning"
    assert submit.headers["x-goog-api-key"] == API_KEY
    instance = submit.body["instances"][0]
    assert instance["prompt"] == PROMPT + LOOP_DIRECTION
    assert base64.b64decode(instance["image"]["bytesBase64Encoded"]) == STILL
    assert instance["image"]["mimeType"] == "image/png"
    parameters = submit.body["parameters"]
    assert parameters["sampleCount"] == 1
    assert parameters["durationSeconds"] == 4
    assert parameters["aspectRatio"] == "9:16"
    assert parameters["generateAudio"] is False
    assert "storageUri" not in parameters  # the video must come back inline


async def test_without_a_still_the_submit_is_text_to_video(
    maker: VeoClipMaker, vertex: FakeVertexApi
) -> None:
    await maker.make_clip(PROMPT, SPEC, None)

    assert "image" not in vertex.submitted()[0].body["instances"][0]


async def test_polls_fetch_the_operation_by_its_name(
    maker: VeoClipMaker, vertex: FakeVertexApi
) -> None:
    await maker.make_clip(PROMPT, SPEC, STILL)

    poll = next(r for r in vertex.requests if r.path.endswith(":fetchPredictOperation"))
    name = poll.body["operationName"]
    assert name.startswith(
        f"projects/fake-project/locations/us-central1/publishers/google/models/{DEFAULT_MODEL}/operations/"
    )
    assert poll.path == f"/v1beta1/{name.rpartition('/operations/')[0]}:fetchPredictOperation"


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_a_submit_rate_limit_or_server_error_is_retryable(
    maker: VeoClipMaker, vertex: FakeVertexApi, status: int
) -> None:
    vertex.fail_submit(status)

    error = await failure(maker)

    assert error.retryable and error.status == status


async def test_a_bad_request_is_not_retryable(maker: VeoClipMaker, vertex: FakeVertexApi) -> None:
    vertex.fail_submit(400)

    error = await failure(maker)

    assert not error.retryable and error.status == 400


async def test_a_wrong_key_is_not_retryable(vertex: FakeVertexApi) -> None:
    maker = VeoClipMaker(api_key="wrong", base_url=vertex.base_url, poll_s=0.01)
    try:
        error = await failure(maker)
    finally:
        await maker.aclose()

    assert not error.retryable and error.status == 401


async def test_the_sdk_does_not_retry_behind_the_sagas_back(
    maker: VeoClipMaker, vertex: FakeVertexApi
) -> None:
    vertex.fail_submit(503)

    await failure(maker)

    assert vertex.submits == 1


async def test_a_poll_failing_on_the_way_is_polled_again_and_the_clip_kept(
    maker: VeoClipMaker, vertex: FakeVertexApi
) -> None:
    vertex.fail_poll(503, times=2)

    clip = await maker.make_clip(PROMPT, SPEC, STILL)

    assert clip.content_type == "video/mp4"
    assert vertex.submits == 1  # the paid operation was not submitted again
    assert vertex.polls == 4  # two failures, one "running", one done


async def test_an_operation_that_never_finishes_misses_the_deadline_not_retryable(
    vertex: FakeVertexApi,
) -> None:
    vertex.never_finish()
    maker = VeoClipMaker(api_key=API_KEY, base_url=vertex.base_url, timeout_s=0.3, poll_s=0.02)
    try:
        error = await failure(maker)
    finally:
        await maker.aclose()

    assert not error.retryable
    assert "0.3s" in str(error)
    assert vertex.submits == 1 and vertex.polls >= 2


async def test_a_filtered_clip_is_not_retryable_and_says_why(
    maker: VeoClipMaker, vertex: FakeVertexApi
) -> None:
    vertex.filter()

    error = await failure(maker)

    assert not error.retryable
    assert "filtered" in str(error) and "fake" in str(error)


@pytest.mark.parametrize(("code", "retryable"), [(14, True), (8, True), (13, True), (3, False)])
async def test_an_operation_error_is_retryable_only_for_transient_codes(
    maker: VeoClipMaker, vertex: FakeVertexApi, code: int, retryable: bool
) -> None:
    vertex.end_with_error(code)

    error = await failure(maker)

    assert error.retryable is retryable
    assert f"{code}:" in str(error)


async def test_a_clip_left_in_cloud_storage_is_not_retryable(
    maker: VeoClipMaker, vertex: FakeVertexApi
) -> None:
    vertex.answer_gcs_uri()

    error = await failure(maker)

    assert not error.retryable and "Cloud Storage" in str(error)


async def test_key_and_base_url_come_from_the_standard_environment_variables(
    vertex: FakeVertexApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("GOOGLE_CLOUD_PROJECT", "GEMINI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GOOGLE_API_KEY", API_KEY)
    monkeypatch.setenv("GOOGLE_VERTEX_BASE_URL", vertex.base_url)
    maker = VeoClipMaker(poll_s=0.01)
    try:
        clip = await maker.make_clip(PROMPT, SPEC, STILL)
    finally:
        await maker.aclose()

    assert clip.content_type == "video/mp4"
    assert vertex.submitted()[0].headers["x-goog-api-key"] == API_KEY


def test_neither_project_nor_key_is_refused_at_construction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("GOOGLE_CLOUD_PROJECT", "GOOGLE_API_KEY", "GEMINI_API_KEY"):
        monkeypatch.delenv(name, raising=False)

    with pytest.raises(ValueError, match="GOOGLE_CLOUD_PROJECT"):
        VeoClipMaker()


def test_an_mp4_without_an_ftyp_box_is_refused() -> None:
    with pytest.raises(GenerationError, match="ftyp") as caught:
        checked_clip(b"<html>not a video</html>", "video/mp4", DEFAULT_MODEL)

    assert not caught.value.retryable


def test_a_clip_over_the_size_limit_is_refused() -> None:
    with pytest.raises(GenerationError, match="larger"):
        checked_clip(bytes(MAX_CLIP_BYTES + 1), "video/mp4", DEFAULT_MODEL)


def test_a_clip_of_an_unplayable_type_is_refused() -> None:
    with pytest.raises(GenerationError, match="unplayable"):
        checked_clip(sample_mp4("x"), "application/octet-stream", DEFAULT_MODEL)


async def test_aclose_is_idempotent(vertex: FakeVertexApi) -> None:
    maker = VeoClipMaker(api_key=API_KEY, base_url=vertex.base_url)

    await maker.aclose()
    await maker.aclose()
