"""An erase drops the user's state this node keeps in memory (the erase hook): reads after
it see the tombstone's defaults, never the erased state."""

from __future__ import annotations

from tests.conftest import LiveServer, auth


async def test_an_erase_drops_the_state_kept_in_memory(live_server: LiveServer) -> None:
    service = auth("alice", "service")
    async with live_server.http() as http:
        posted = await http.post(
            "/v1/demo/users/alice/state", json={"mood": "happy"}, headers=service
        )
        kept = await http.get("/v1/users/alice/state", headers=auth("alice"))
        erased = await http.delete("/v1/users/alice", headers=auth("alice"))
        after = await http.get("/v1/users/alice/state", headers=auth("alice"))
    assert posted.status_code == 200 and kept.json()["mood"] == "happy"
    assert erased.status_code == 200
    assert after.status_code == 200
    assert after.json()["mood"] == "content"  # the defaults, not the erased "happy"
    # The erase is a version of its own (devices get it as a delta); versions go on from it.
    assert after.json()["version"] == kept.json()["version"] + 1
    registry = live_server.app.state.metrics.registry
    from_memory = registry.get_sample_value("companion_state_reads_total", {"source": "cache"})
    assert from_memory is not None and from_memory >= 1  # the first read was from memory
