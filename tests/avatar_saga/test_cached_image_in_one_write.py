"""A cached image goes with its state's commit: one write and one delta for a change whose
avatar this process knows is cached (the saga's :meth:`~server.avatar.saga.AvatarSaga.fold`)."""

from __future__ import annotations

from collections.abc import Callable

from server.avatar.stage import avatar_stage
from server.settings import Settings
from server.store.sqlite import SQLiteStore
from tests.avatar_saga.conftest import post_state, saga_of, status_delta
from tests.conftest import recv_op, start_server
from tests.store.test_current_states import CountingStore


async def test_a_cache_hit_image_is_committed_with_the_state_in_one_write(
    settings_with: Callable[..., Settings],
) -> None:
    settings = settings_with(video="off")  # no clip to make: the image is all there is
    store = CountingStore(SQLiteStore(settings.data_dir / "counted.sqlite3"))
    async with start_server(settings, store=store, stages=[avatar_stage]) as live:  # type: ignore[arg-type]
        watch = await live.connect("fay", "watch")
        async with live.http() as http:
            await post_state(http, "fay", state="exercising", mood="energized")
            first = await status_delta(watch, "ready")  # generated: a saga of its own
            await post_state(http, "fay", state="calm", mood="content")
            await status_delta(watch, "ready")
            await saga_of(live).idle()
            writes = len(store.writes)

            answer = await post_state(http, "fay", state="exercising", mood="energized")
            delta = await recv_op(watch, "delta")
            await saga_of(live).idle()
        await watch.close()
    assert len(store.writes) == writes + 1  # the state and its image: one write
    assert answer["image_url"] == first["image_url"]
    assert answer["avatar_status"] == "ready"
    assert delta["changes"]["state"] == "exercising"  # one delta carries both
    assert delta["changes"]["image_url"] == first["image_url"]
    hits = live.app.state.metrics.avatar_cache.labels("hit")._value.get()
    assert hits == 1


async def test_without_cache_reads_the_image_follows_in_its_own_commit(
    settings_with: Callable[..., Settings],
) -> None:
    settings = settings_with(video="off", avatar_cache="off")
    store = CountingStore(SQLiteStore(settings.data_dir / "counted.sqlite3"))
    async with start_server(settings, store=store, stages=[avatar_stage]) as live:  # type: ignore[arg-type]
        watch = await live.connect("fay", "watch")
        async with live.http() as http:
            await post_state(http, "fay", state="exercising", mood="energized")
            await status_delta(watch, "ready")
            await post_state(http, "fay", state="calm", mood="content")
            await status_delta(watch, "ready")
            await saga_of(live).idle()
            writes = len(store.writes)
            answer = await post_state(http, "fay", state="exercising", mood="energized")
            again = await status_delta(watch, "ready")
            await saga_of(live).idle()
        await watch.close()
    assert answer["image_url"] != again["image_url"]  # the commit carried the old image
    assert len(store.writes) >= writes + 2  # the state, then (generating and) the image
