"""What a long-poll answers when nothing changed in time (docs/protocol.md, REST)."""

from __future__ import annotations

from tests.conftest import LiveServer, auth
from tests.server.conftest import commit


async def test_a_timed_out_long_poll_is_304_with_if_none_match_and_200_with_since_only(
    live_server: LiveServer,
) -> None:
    async with live_server.http() as client:
        current = await commit(client, "alice", mood="happy")
        etag = f'"{current["state_hash"]}"'
        version = current["version"]
        by_hash = await client.get(
            "/v1/users/alice/state?wait=1", headers={**auth("alice"), "If-None-Match": etag}
        )
        by_version = await client.get(
            f"/v1/users/alice/state?wait=1&since={version}", headers=auth("alice")
        )
        both = await client.get(
            f"/v1/users/alice/state?wait=1&since={version}",
            headers={**auth("alice"), "If-None-Match": etag},
        )
    assert (by_hash.status_code, by_hash.content) == (304, b"")
    assert by_version.status_code == 200 and by_version.json()["version"] == version
    assert by_version.headers["ETag"] == etag
    assert both.status_code == 304
