"""Media stores: the local directory with its /media route, and S3 against a moto server."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aioboto3
import httpx
import pytest
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from moto.server import ThreadedMotoServer
from starlette.applications import Starlette
from werkzeug.serving import WSGIRequestHandler, make_server

from server.media.base import IMMUTABLE, content_key
from server.media.local import LocalMediaStore, media_route
from server.media.s3 import S3MediaStore

PNG = b"\x89PNG\r\n\x1a\n" + b"pretend pixels" * 10
KEY = content_key(PNG, "image/png")
REGION = "eu-central-1"
UNSAFE_KEYS = ["../secret.png", "/etc/passwd", "a/../../b.png", "a\\b.png", "a//b.png", ""]

# -- local store ---------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> LocalMediaStore:
    return LocalMediaStore(tmp_path / "media")


@pytest.fixture
async def http(store: LocalMediaStore) -> AsyncIterator[httpx.AsyncClient]:
    app = Starlette(routes=[media_route(store)])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


def test_content_keys_are_the_sha256_of_the_bytes_with_an_extension() -> None:
    assert KEY == f"avatars/{hashlib.sha256(PNG).hexdigest()}.png"
    assert content_key(b"clip", "video/mp4").endswith(".mp4")


async def test_put_returns_a_url_under_the_base_and_get_returns_bytes_and_type(
    store: LocalMediaStore,
) -> None:
    url = await store.put(KEY, PNG, "image/png")

    assert url == f"/media/{KEY}"
    assert await store.get(KEY) == (PNG, "image/png")
    assert await store.get("avatars/missing.png") is None


async def test_served_with_its_content_type_and_an_immutable_cache_header(
    store: LocalMediaStore, http: httpx.AsyncClient
) -> None:
    url = await store.put(KEY, PNG, "image/png")

    response = await http.get(url)

    assert response.status_code == 200
    assert response.content == PNG
    assert response.headers["content-type"] == "image/png"
    assert response.headers["cache-control"] == IMMUTABLE == "public, max-age=31536000, immutable"


async def test_a_matching_if_none_match_gets_304_without_a_body(
    store: LocalMediaStore, http: httpx.AsyncClient
) -> None:
    url = await store.put(KEY, PNG, "image/png")
    etag = (await http.get(url)).headers["etag"]

    for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        revalidated = await http.get(url, headers={"If-None-Match": header})
        assert revalidated.status_code == 304
        assert revalidated.content == b""
        assert revalidated.headers["etag"] == etag
    changed = await http.get(url, headers={"If-None-Match": '"something-else"'})
    assert changed.status_code == 200


async def test_a_missing_key_is_404_and_not_cacheable(http: httpx.AsyncClient) -> None:
    response = await http.get("/media/avatars/nothing-here.png")

    assert response.status_code == 404
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("key", [*UNSAFE_KEYS, ".meta/x.json", "a/.hidden.png"])
async def test_unsafe_keys_are_rejected_with_value_error(store: LocalMediaStore, key: str) -> None:
    with pytest.raises(ValueError, match="media key"):
        await store.put(key, PNG, "image/png")
    with pytest.raises(ValueError, match="media key"):
        await store.get(key)


async def test_traversal_and_metadata_paths_are_404_over_http(
    store: LocalMediaStore, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    (tmp_path / "secret.txt").write_text("do not serve")
    await store.put(KEY, PNG, "image/png")

    for path in ("/media/..%2Fsecret.txt", "/media/%2E%2E/secret.txt", f"/media/.meta/{KEY}.json"):
        assert (await http.get(path)).status_code == 404, path


async def test_a_failed_write_leaves_neither_a_partial_object_nor_a_temp_file(
    store: LocalMediaStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_replace = os.replace

    def failing_replace(src: str, dst: str) -> None:
        if str(dst).endswith(".png"):
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        await store.put(KEY, PNG, "image/png")
    monkeypatch.undo()

    assert await store.get(KEY) is None
    assert not [p for p in store.directory.rglob("*") if p.name.startswith(".tmp-")]


async def test_rewriting_a_key_replaces_the_whole_object(store: LocalMediaStore) -> None:
    await store.put("avatars/a.png", b"old bytes, longer than the new ones", "image/png")
    await store.put("avatars/a.png", b"new", "image/webp")

    assert await store.get("avatars/a.png") == (b"new", "image/webp")


def test_an_absolute_base_url_gives_absolute_urls_and_mounts_at_its_path(tmp_path: Path) -> None:
    store = LocalMediaStore(tmp_path, base_url="https://companion.example/media/")

    assert store.url_for(KEY) == f"https://companion.example/media/{KEY}"
    assert media_route(store).path == "/media/{key:path}"


# -- S3 store against moto -----------------------------------------------------------


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: Any) -> None:
        """No access log on the test output."""


def _one_server_header(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """Drop moto's own ``server`` header; werkzeug adds one.

    moto 5.2 sends ``server: amazon.com`` next to werkzeug's ``Server``, and aiohttp (under
    aiobotocore) refuses a response with two (getmoto/moto#9930, aio-libs/aiohttp#12297).
    """

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            kept = [(name, value) for name, value in headers if name.lower() != "server"]
            return start_response(status, kept, exc_info)

        return app(environ, start)

    return wrapped


class _MotoServer(ThreadedMotoServer):
    """moto's threaded server on loopback with the duplicate header removed."""

    def _server_entry(self) -> None:
        app = _one_server_header(DomainDispatcherApplication(create_backend_app))
        self._server = make_server(
            self._ip_address, self._port, app, threaded=True, request_handler=_QuietHandler
        )
        self._server_ready_event.set()
        self._server.serve_forever()


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    server = _MotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


class _CountingSession:
    """An aioboto3 session that counts the clients it makes."""

    def __init__(self) -> None:
        self.session = aioboto3.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
        )
        self.clients = 0

    def client(self, *args: Any, **kwargs: Any) -> Any:
        self.clients += 1
        return self.session.client(*args, **kwargs)


@pytest.fixture
async def bucket(moto_endpoint: str, request: pytest.FixtureRequest) -> str:
    name = "avatars-" + hashlib.sha256(request.node.name.encode()).hexdigest()[:12]
    session = _CountingSession().session
    async with session.client("s3", endpoint_url=moto_endpoint, region_name=REGION) as s3:
        await s3.create_bucket(
            Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
    return name


def s3_store(endpoint: str, bucket: str, **options: Any) -> S3MediaStore:
    options.setdefault("session", _CountingSession())
    return S3MediaStore(bucket, "media/v1", region=REGION, endpoint_url=endpoint, **options)


async def test_s3_put_then_the_presigned_url_serves_the_bytes(
    moto_endpoint: str, bucket: str
) -> None:
    async with s3_store(moto_endpoint, bucket, presign_seconds=900) as store:
        url = await store.put(KEY, PNG, "image/png")

    parts = urlsplit(url)
    assert parts.path == f"/{bucket}/media/v1/{KEY}"
    assert parse_qs(parts.query)["X-Amz-Expires"] == ["900"]
    async with httpx.AsyncClient() as client:
        response = await client.get(url)
    assert response.status_code == 200
    assert response.content == PNG
    assert response.headers["content-type"] == "image/png"
    assert response.headers["cache-control"] == IMMUTABLE


async def test_s3_public_base_url_gives_the_base_plus_the_object_key(
    moto_endpoint: str, bucket: str
) -> None:
    public = "https://cdn.companion.example/"
    async with s3_store(moto_endpoint, bucket, public_base_url=public) as store:
        url = await store.put(KEY, PNG, "image/png")
        stored = await store.get(KEY)

    assert url == f"https://cdn.companion.example/media/v1/{KEY}"
    assert stored == (PNG, "image/png")


async def test_s3_get_returns_bytes_and_type_or_none(moto_endpoint: str, bucket: str) -> None:
    async with s3_store(moto_endpoint, bucket) as store:
        await store.put(KEY, PNG, "image/png")

        assert await store.get(KEY) == (PNG, "image/png")
        assert await store.get("avatars/missing.png") is None


async def test_s3_store_uses_one_client_for_its_lifetime(moto_endpoint: str, bucket: str) -> None:
    session = _CountingSession()
    async with s3_store(moto_endpoint, bucket, session=session) as store:
        await store.put(KEY, PNG, "image/png")
        await store.get(KEY)
        await store.url_for(KEY)
        await store.put("avatars/second.png", PNG, "image/png")

    assert session.clients == 1


@pytest.mark.parametrize("key", UNSAFE_KEYS)
async def test_s3_rejects_unsafe_keys_before_any_request(key: str) -> None:
    session = _CountingSession()
    store = S3MediaStore("bucket", region=REGION, session=session)

    with pytest.raises(ValueError, match="media key"):
        await store.put(key, PNG, "image/png")
    assert session.clients == 0
    await store.close()


def test_s3_refuses_a_presign_time_sigv4_cannot_sign() -> None:
    with pytest.raises(ValueError, match="presign_seconds"):
        S3MediaStore("bucket", region=REGION, presign_seconds=8 * 24 * 3600)
