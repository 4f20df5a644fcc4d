"""Device tokens and the access rule."""

from __future__ import annotations

import jwt
import pytest

from server.auth import (
    ALGORITHM,
    LEEWAY_S,
    DeviceKind,
    bearer,
    issue,
    origin_allowed,
    own_origins,
    verify,
)
from server.errors import Forbidden, TokenExpired, TokenInvalid, TokenMissing

SECRET = "a" * 40
NOW = 1_750_000_000


def test_issue_then_verify() -> None:
    token = issue(SECRET, "alice", DeviceKind.WATCH, ttl_s=60, now_s=NOW)
    principal = verify(token, SECRET, now_s=NOW + 30)
    assert principal.user_id == "alice"
    assert principal.device is DeviceKind.WATCH
    assert principal.expires_at == NOW + 60
    assert principal.token_id


def test_each_token_has_its_own_id() -> None:
    a = verify(issue(SECRET, "a", DeviceKind.PHONE, ttl_s=60, now_s=NOW), SECRET, now_s=NOW)
    b = verify(issue(SECRET, "a", DeviceKind.PHONE, ttl_s=60, now_s=NOW), SECRET, now_s=NOW)
    assert a.token_id != b.token_id


def test_expired_token() -> None:
    token = issue(SECRET, "alice", DeviceKind.PHONE, ttl_s=60, now_s=NOW)
    verify(token, SECRET, now_s=NOW + 60 + LEEWAY_S)  # within the leeway
    with pytest.raises(TokenExpired):
        verify(token, SECRET, now_s=NOW + 60 + LEEWAY_S + 1)


def test_wrong_secret() -> None:
    token = issue(SECRET, "alice", DeviceKind.PHONE, ttl_s=60, now_s=NOW)
    with pytest.raises(TokenInvalid):
        verify(token, "b" * 40, now_s=NOW)


@pytest.mark.parametrize("token", [None, ""])
def test_missing_token(token: str | None) -> None:
    with pytest.raises(TokenMissing):
        verify(token, SECRET, now_s=NOW)


def test_malformed_token() -> None:
    with pytest.raises(TokenInvalid):
        verify("not.a.jwt", SECRET, now_s=NOW)


def test_unknown_device_kind() -> None:
    claims = {"sub": "alice", "dev": "toaster", "exp": NOW + 60, "jti": "x"}
    token = jwt.encode(claims, SECRET, algorithm=ALGORITHM)
    with pytest.raises(TokenInvalid, match="toaster"):
        verify(token, SECRET, now_s=NOW)


def test_missing_claim_and_bad_subject() -> None:
    no_jti = jwt.encode({"sub": "a", "dev": "phone", "exp": NOW + 60}, SECRET, ALGORITHM)
    with pytest.raises(TokenInvalid):
        verify(no_jti, SECRET, now_s=NOW)
    bad_sub = jwt.encode(
        {"sub": "bad user", "dev": "phone", "exp": NOW + 60, "jti": "x"}, SECRET, ALGORITHM
    )
    with pytest.raises(TokenInvalid, match="subject"):
        verify(bad_sub, SECRET, now_s=NOW)


def test_issue_refuses_bad_input() -> None:
    with pytest.raises(ValueError):
        issue(SECRET, "bad user", DeviceKind.PHONE, ttl_s=60, now_s=NOW)
    with pytest.raises(ValueError):
        issue(SECRET, "alice", DeviceKind.PHONE, ttl_s=0, now_s=NOW)


def test_access_rule() -> None:
    phone = verify(issue(SECRET, "alice", DeviceKind.PHONE, ttl_s=60, now_s=NOW), SECRET, now_s=NOW)
    service = verify(
        issue(SECRET, "ops", DeviceKind.SERVICE, ttl_s=60, now_s=NOW), SECRET, now_s=NOW
    )
    assert phone.may_access("alice")
    assert not phone.may_access("bob")
    with pytest.raises(Forbidden):
        phone.require("bob")
    phone.require("alice")
    assert service.may_access("bob")
    service.require("bob")


def test_bearer_header() -> None:
    assert bearer("Bearer abc") == "abc"
    assert bearer("bearer  abc ") == "abc"
    assert bearer("Basic abc") is None
    assert bearer("Bearer ") is None
    assert bearer(None) is None


def test_origin_allowed() -> None:
    own = own_origins("https://push.example:8000", None)
    assert origin_allowed(None, own, ())  # not a browser
    assert origin_allowed("https://push.example:8000", own, ())  # the public URL
    assert origin_allowed("https://app.example/", own, ["https://app.example"])
    assert origin_allowed("https://evil.example", own, ["*"])
    assert not origin_allowed("https://evil.example", own, ["https://app.example"])
    assert not origin_allowed("https://evil.example", (), ())


def test_own_origin_is_the_public_url_not_the_host_header() -> None:
    own = own_origins("https://push.example/base/", ("10.0.0.5", 8000))
    assert own == ("https://push.example",)
    assert not origin_allowed("https://evil.example", own, ())
    assert not origin_allowed("http://10.0.0.5:8000", own, ())


def test_without_a_public_url_the_own_origin_is_the_socket_address() -> None:
    own = own_origins("", ("127.0.0.1", 8123))
    assert origin_allowed("http://127.0.0.1:8123", own, ())
    assert origin_allowed("http://localhost:8123", own, ())
    assert not origin_allowed("http://localhost:9999", own, ())
    assert not origin_allowed("http://evil.example", own, ())
    assert own_origins("", ("10.1.2.3", 80)) == ("http://10.1.2.3:80", "https://10.1.2.3:80")
