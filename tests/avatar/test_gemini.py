"""GeminiGenerator with the real google-genai SDK against the local fake Gemini API."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator

import pytest
from PIL import Image

from brain.avatar.base import PHONE_SIZE, WATCH_SIZE
from brain.avatar.errors import GenerationError
from brain.avatar.gemini import DEFAULT_MODEL, GeminiGenerator
from brain.avatar.prompt import AvatarSpec, build_prompt
from tests.fakes.gemini_api import API_KEY, FakeGeminiApi

SPEC = AvatarSpec.of("stressed", "anxious", 20, "cat")
PROMPT = build_prompt(SPEC)
FAKE_ORANGE = (232, 121, 49)
"""The colour of the blob in the middle of the fake's picture."""


@pytest.fixture
def gemini_api() -> Iterator[FakeGeminiApi]:
    with FakeGeminiApi() as api:
        yield api


@pytest.fixture
async def generator(gemini_api: FakeGeminiApi) -> AsyncIterator[GeminiGenerator]:
    generator = GeminiGenerator(api_key=API_KEY, base_url=gemini_api.base_url, timeout_s=10)
    yield generator
    await generator.aclose()


def opened(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()
    return image


async def test_the_inline_png_comes_back_at_phone_and_watch_size(
    generator: GeminiGenerator,
) -> None:
    image = await generator.generate(PROMPT, SPEC)

    phone, watch = opened(image.phone_png), opened(image.watch_png)
    assert (phone.format, phone.size) == ("PNG", (PHONE_SIZE, PHONE_SIZE))
    assert (watch.format, watch.size) == ("PNG", (WATCH_SIZE, WATCH_SIZE))
    # The pixels are the fake's picture (downscaled from 1024 px), not something else.
    assert phone.convert("RGB").getpixel((PHONE_SIZE // 2, PHONE_SIZE // 2)) == FAKE_ORANGE
    assert watch.convert("RGB").getpixel((WATCH_SIZE // 2, WATCH_SIZE // 2)) == FAKE_ORANGE
    assert image.model == DEFAULT_MODEL


async def test_the_prompt_reaches_the_server_asking_for_an_image(
    generator: GeminiGenerator, gemini_api: FakeGeminiApi
) -> None:
    await generator.generate(PROMPT, SPEC)

    [request] = gemini_api.requests
    assert request.method == "POST"
    assert request.path == f"/v1beta/models/{DEFAULT_MODEL}:generateContent"
    assert request.prompt == PROMPT
    assert request.body["generationConfig"]["responseModalities"] == ["IMAGE"]
    assert request.headers["x-goog-api-key"] == API_KEY


async def test_a_server_error_is_a_retryable_generation_error(
    generator: GeminiGenerator, gemini_api: FakeGeminiApi
) -> None:
    gemini_api.fail(500)

    with pytest.raises(GenerationError) as caught:
        await generator.generate(PROMPT, SPEC)

    assert caught.value.retryable is True
    assert caught.value.status == 500


async def test_a_rate_limit_is_a_retryable_generation_error(
    generator: GeminiGenerator, gemini_api: FakeGeminiApi
) -> None:
    gemini_api.fail(429)

    with pytest.raises(GenerationError) as caught:
        await generator.generate(PROMPT, SPEC)

    assert (caught.value.retryable, caught.value.status) == (True, 429)


async def test_a_bad_request_is_not_retryable(
    generator: GeminiGenerator, gemini_api: FakeGeminiApi
) -> None:
    gemini_api.fail(400)

    with pytest.raises(GenerationError) as caught:
        await generator.generate(PROMPT, SPEC)

    assert (caught.value.retryable, caught.value.status) == (False, 400)


async def test_the_sdk_does_not_retry_behind_the_sagas_back(
    generator: GeminiGenerator, gemini_api: FakeGeminiApi
) -> None:
    gemini_api.fail(503)

    with pytest.raises(GenerationError):
        await generator.generate(PROMPT, SPEC)

    assert gemini_api.calls == 1


async def test_after_scripted_failures_the_next_call_succeeds(
    generator: GeminiGenerator, gemini_api: FakeGeminiApi
) -> None:
    gemini_api.fail(500, times=2)

    for _ in range(2):
        with pytest.raises(GenerationError):
            await generator.generate(PROMPT, SPEC)
    image = await generator.generate(PROMPT, SPEC)

    assert opened(image.phone_png).size == (PHONE_SIZE, PHONE_SIZE)
    assert gemini_api.calls == 3


async def test_a_hung_request_times_out_as_retryable(gemini_api: FakeGeminiApi) -> None:
    gemini_api.hang()
    generator = GeminiGenerator(api_key=API_KEY, base_url=gemini_api.base_url, timeout_s=0.2)
    try:
        with pytest.raises(GenerationError, match=r"longer than 0\.2s") as caught:
            await generator.generate(PROMPT, SPEC)
    finally:
        await generator.aclose()

    assert caught.value.retryable is True
    assert gemini_api.hung.is_set()


async def test_a_blocked_image_is_not_retryable(
    generator: GeminiGenerator, gemini_api: FakeGeminiApi
) -> None:
    gemini_api.refuse()

    with pytest.raises(GenerationError, match="IMAGE_SAFETY") as caught:
        await generator.generate(PROMPT, SPEC)

    assert caught.value.retryable is False


async def test_a_text_only_answer_is_retryable(
    generator: GeminiGenerator, gemini_api: FakeGeminiApi
) -> None:
    gemini_api.answer_text()

    with pytest.raises(GenerationError, match="without an image") as caught:
        await generator.generate(PROMPT, SPEC)

    assert caught.value.retryable is True


async def test_a_wrong_key_is_not_retryable(gemini_api: FakeGeminiApi) -> None:
    generator = GeminiGenerator(api_key="wrong", base_url=gemini_api.base_url)
    try:
        with pytest.raises(GenerationError) as caught:
            await generator.generate(PROMPT, SPEC)
    finally:
        await generator.aclose()

    assert (caught.value.retryable, caught.value.status) == (False, 400)


async def test_key_and_base_url_come_from_the_standard_environment_variables(
    gemini_api: FakeGeminiApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", API_KEY)
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", gemini_api.base_url)
    generator = GeminiGenerator()
    try:
        await generator.generate(PROMPT, SPEC)
    finally:
        await generator.aclose()

    assert gemini_api.calls == 1
    assert gemini_api.requests[0].headers["x-goog-api-key"] == API_KEY


def test_no_key_anywhere_is_refused_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)

    with pytest.raises(ValueError, match="API key"):
        GeminiGenerator()


async def test_aclose_is_idempotent(gemini_api: FakeGeminiApi) -> None:
    generator = GeminiGenerator(api_key=API_KEY, base_url=gemini_api.base_url)

    await generator.aclose()
    await generator.aclose()
