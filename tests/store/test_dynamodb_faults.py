"""The DynamoDB adapter under faults, injected with botocore event hooks on its client.

Against a real DynamoDB Local: ``before-parameter-build`` withholds some items of a
``BatchWriteItem`` (they are not sent) and ``after-call`` hands them back in
``UnprocessedItems``, exactly as DynamoDB does under load; ``before-call`` answers a call
with a throttling or server error instead of sending it. Retries are instant (injected
sleep), and the delays the store would have slept are recorded.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse

from brain.backoff import Backoff, instant
from brain.model import Frame
from server.errors import FramesNotDurable, StoreError, VersionConflict
from server.store.base import UserState
from server.store.dynamodb import DynamoDBStore

DynamoDBStoreFactory = Callable[..., AbstractAsyncContextManager[DynamoDBStore]]

pytestmark = pytest.mark.dynamodb

T0 = (int(time.time()) // 60) * 60_000  # near now: DynamoDB Local deletes expired frames
STATUS = {
    "ProvisionedThroughputExceededException": 400,
    "ThrottlingException": 400,
    "RequestLimitExceeded": 400,
    "InternalServerError": 500,
    "ValidationException": 400,
}


@dataclass
class Faults:
    """Fault injection for one operation of one client.

    ``fail(n, params)`` names the error code to answer call ``n`` (from 1) with, or None;
    ``withhold(n, item)`` says whether a put of ``item`` is held back on call ``n``.
    """

    operation: str
    fail: Callable[[int, dict[str, Any]], str | None] = lambda n, params: None
    withhold: Callable[[int, dict[str, Any]], bool] = lambda n, item: False
    calls: int = 0
    failures: list[str] = field(default_factory=list)
    withheld: int = 0

    def install(self, client: Any) -> None:
        events = client.meta.events
        events.register(f"before-parameter-build.dynamodb.{self.operation}", self._build)
        events.register(f"before-call.dynamodb.{self.operation}", self._before_call)
        events.register(f"after-call.dynamodb.{self.operation}", self._after_call)

    def _build(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        self.calls += 1
        code = self.fail(self.calls, params)
        if code is not None:
            context["fault_code"] = code
            return
        if "RequestItems" not in params:
            return
        kept: dict[str, list[Any]] = {}
        withheld: dict[str, list[Any]] = {}
        for table, requests in params["RequestItems"].items():
            for request in requests:
                held = "PutRequest" in request and self.withhold(
                    self.calls, request["PutRequest"]["Item"]
                )
                (withheld if held else kept).setdefault(table, []).append(request)
        self.withheld += sum(len(requests) for requests in withheld.values())
        context["fault_withheld"] = withheld
        if kept:
            # A new dict: the store's own request objects stay as they were.
            params["RequestItems"] = kept
        else:
            context["fault_nothing_sent"] = True  # an empty request would be invalid

    def _before_call(self, context: dict[str, Any], **_: Any) -> Any:
        code = context.get("fault_code")
        if code is not None:
            self.failures.append(code)
            status = STATUS[code]
            parsed = {
                "Error": {"Code": code, "Message": "injected by the test"},
                "ResponseMetadata": {"HTTPStatusCode": status},
            }
            return AWSResponse("http://fault", status, {}, None), parsed
        if context.get("fault_nothing_sent"):
            return AWSResponse("http://fault", 200, {}, None), {"UnprocessedItems": {}}
        return None

    def _after_call(self, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        withheld = context.get("fault_withheld")
        if withheld and "Error" not in parsed:
            unprocessed = parsed.setdefault("UnprocessedItems", {})
            for table, requests in withheld.items():
                unprocessed.setdefault(table, []).extend(requests)


def rows_of(users: list[str], count: int) -> list[tuple[str, Frame]]:
    return [(users[i % len(users)], Frame(ts=T0 + i, hr=60.0 + i % 40)) for i in range(count)]


async def stored(store: Any, user_id: str) -> list[Frame]:
    frames: list[Frame] = await store.frames_between(user_id, 0, 10**13, now_ms=T0)
    return frames


def minute_of(item: dict[str, Any]) -> int:
    """The minute (from T0) of the bucket a frames PutItem writes."""
    return (int(item["sk"]["S"].partition("#")[0]) - T0) // 60_000


async def test_throttled_and_failed_bucket_writes_are_retried_until_all_stored_once(
    dynamodb_store_factory: DynamoDBStoreFactory,
) -> None:
    delays: list[float] = []
    codes = list(STATUS)[:4]  # the throttling codes and a 5xx
    # Every third call is answered with an error, cycling through the codes.
    faults = Faults("PutItem", fail=lambda n, _: codes[(n // 3) % 4] if n % 3 == 0 else None)
    rows = [(u, Frame(ts=T0 + i * 1000, hr=60.0 + i % 40)) for i in range(300) for u in ("a", "b")]
    rows += rows[:10]  # resent frames in the same call

    async with dynamodb_store_factory(retry=instant(Backoff(attempts=30), record=delays)) as store:
        faults.install(store.client)
        await store.put_frames(rows)

        assert delays and set(faults.failures) == set(codes), "the faults were not injected"
        for user in ("a", "b"):
            assert await stored(store, user) == [f for u, f in rows[:600] if u == user]


async def test_buckets_failing_past_the_bound_raise_frames_not_durable_naming_their_rows(
    dynamodb_store_factory: DynamoDBStoreFactory,
) -> None:
    delays: list[float] = []
    policy = instant(Backoff(attempts=4, base=0.1, cap=1.0), record=delays)

    def doomed(n: int, params: dict[str, Any]) -> str | None:
        return "ThrottlingException" if params["Item"]["user_id"]["S"] == "doomed" else None

    faults = Faults("PutItem", fail=doomed)
    rows = rows_of(["alice", "doomed", "alice"], 60)

    async with dynamodb_store_factory(retry=policy) as store:
        faults.install(store.client)
        with pytest.raises(FramesNotDurable) as error:
            await store.put_frames(rows)

        assert error.value.failed == {i for i, (user, _) in enumerate(rows) if user == "doomed"}
        assert await stored(store, "alice") == [f for u, f in rows if u == "alice"]
        assert await stored(store, "doomed") == []
    # One bucket of doomed, tried 4 times: 3 backoffs, none above its ceiling.
    assert len(delays) == 3
    assert all(0 <= d <= policy.ceiling(2) for d in delays)


async def test_throttling_that_never_ends_fails_every_row(
    dynamodb_store_factory: DynamoDBStoreFactory,
) -> None:
    faults = Faults("PutItem", fail=lambda n, _: "ThrottlingException")
    rows = [("alice", Frame(ts=T0 + i * 1000, hr=60.0)) for i in range(90)]  # two buckets

    async with dynamodb_store_factory(retry=instant(Backoff(attempts=3))) as store:
        faults.install(store.client)
        with pytest.raises(FramesNotDurable) as error:
            await store.put_frames(rows)

    assert error.value.failed == set(range(90))
    assert "ThrottlingException" in error.value.reason
    assert faults.calls == 2 * 3  # two buckets, three attempts each


async def test_a_bucket_with_a_non_retryable_error_fails_only_its_rows(
    dynamodb_store_factory: DynamoDBStoreFactory,
) -> None:
    def invalid_second_minute(n: int, params: dict[str, Any]) -> str | None:
        return "ValidationException" if minute_of(params["Item"]) == 1 else None

    faults = Faults("PutItem", fail=invalid_second_minute)
    rows = [("alice", Frame(ts=T0 + i * 1000, hr=60.0)) for i in range(120)]

    async with dynamodb_store_factory() as store:
        faults.install(store.client)
        with pytest.raises(FramesNotDurable) as error:
            await store.put_frames(rows)

        assert error.value.failed == set(range(60, 120))
        assert faults.failures == ["ValidationException"]  # not retried
        assert await stored(store, "alice") == [f for _, f in rows[:60]]


async def test_two_nodes_writing_one_bucket_merge_and_lose_no_frame(
    dynamodb_store_factory: DynamoDBStoreFactory, dynamodb_local: str
) -> None:
    """A node that does not know the bucket, or knows an old version of it, merges; so do
    two nodes writing the same frames at once, across the parts of a 4 Hz minute."""
    frames = [Frame(ts=T0 + i * 250, hr=60.0 + i % 50, device="w") for i in range(240)]
    async with dynamodb_store_factory() as first:
        second = DynamoDBStore(
            table_prefix=first.table_prefix,
            region="us-east-1",
            endpoint_url=dynamodb_local,
            retry=instant(Backoff()),
        )
        await second.open()
        try:
            await first.put_frames([("alice", f) for f in frames[:10]])
            await second.put_frames([("alice", f) for f in frames[10:20]])  # new to second
            await first.put_frames([("alice", f) for f in frames[20:30]])  # first is stale
            for start in range(30, 240, 30):
                chunk = [("alice", f) for f in frames[start : start + 30]]
                await asyncio.gather(first.put_frames(chunk), second.put_frames(chunk))
        finally:
            await second.close()

        assert await stored(first, "alice") == frames


async def test_a_resend_of_stored_frames_writes_nothing(
    dynamodb_store_factory: DynamoDBStoreFactory,
) -> None:
    faults = Faults("PutItem")
    rows = [("alice", Frame(ts=T0 + i * 1000, hr=60.0)) for i in range(60)]

    async with dynamodb_store_factory() as store:
        faults.install(store.client)
        await store.put_frames(rows[:30])
        await store.put_frames(rows[30:])
        await store.put_frames(rows)  # the phone resends everything after a reconnect

        assert faults.calls == 2  # one conditional write per batch that brought new frames
        assert await stored(store, "alice") == [f for _, f in rows]


async def test_batches_of_one_device_written_at_once_on_one_node_never_conflict(
    dynamodb_store_factory: DynamoDBStoreFactory,
) -> None:
    """The ingest writes several batches at once; one device's wait for each other here
    instead of failing each other's conditions (which would cost a Query and a rewrite)."""
    puts, queries = Faults("PutItem"), Faults("Query")
    rows = [("alice", Frame(ts=T0 + i * 1000, hr=60.0)) for i in range(60)]

    async with dynamodb_store_factory() as store:
        puts.install(store.client)
        queries.install(store.client)
        await asyncio.gather(*(store.put_frames(rows[i : i + 10]) for i in range(0, 60, 10)))

        assert (puts.calls, queries.calls) == (6, 0)
        assert await stored(store, "alice") == [f for _, f in rows]


async def test_throttled_usage_add_is_retried_and_counted_once(
    dynamodb_store_factory: DynamoDBStoreFactory,
) -> None:
    faults = Faults("UpdateItem", fail=lambda n, _: "ThrottlingException" if n <= 2 else None)

    async with dynamodb_store_factory() as store:
        faults.install(store.client)
        totals = await store.add_usage(
            "alice", "2025-10-09", calls=1, input_tokens=10, output_tokens=1, cost_usd=0.5
        )

        assert faults.calls == 3
        assert (totals.calls, totals.input_tokens, totals.cost_usd) == (1, 10, 0.5)


async def test_usage_add_is_not_retried_after_a_server_error(
    dynamodb_store_factory: DynamoDBStoreFactory,
) -> None:
    """An ADD that met a 5xx may have landed: retrying it could count the call twice."""
    faults = Faults("UpdateItem", fail=lambda n, _: "InternalServerError" if n == 1 else None)

    async with dynamodb_store_factory() as store:
        faults.install(store.client)
        with pytest.raises(StoreError):
            await store.add_usage(
                "alice", "2025-10-09", calls=1, input_tokens=10, output_tokens=1, cost_usd=0.5
            )

        assert faults.calls == 1


async def test_throttled_state_write_is_retried(
    dynamodb_store_factory: DynamoDBStoreFactory,
) -> None:
    code = "ProvisionedThroughputExceededException"
    faults = Faults("PutItem", fail=lambda n, _: code if n == 1 else None)
    state = replace(UserState.initial("alice"), version=1)

    async with dynamodb_store_factory() as store:
        faults.install(store.client)
        await store.put_state(state, expected_version=0)

        assert faults.failures == [code]
        assert await store.get_state("alice") == state


async def test_of_many_racing_writers_of_one_version_exactly_one_wins(
    dynamodb_store_factory: DynamoDBStoreFactory,
) -> None:
    async with dynamodb_store_factory() as store:
        await store.put_state(replace(UserState.initial("alice"), version=1), expected_version=0)
        candidates = [
            replace(UserState("alice", version=2, energy=energy)).rehashed()
            for energy in range(10, 90, 10)
        ]

        results = await asyncio.gather(
            *(store.put_state(c, expected_version=1) for c in candidates),
            return_exceptions=True,
        )

        winners = [c for c, r in zip(candidates, results, strict=True) if r is None]
        conflicts = [r for r in results if isinstance(r, VersionConflict)]
        assert len(winners) == 1
        assert len(conflicts) == len(candidates) - 1
        assert all(c.expected == 1 and c.found == 2 for c in conflicts)
        assert await store.get_state("alice") == winners[0]


async def test_reads_follow_every_page_of_a_query_or_scan(
    dynamodb_store_factory: DynamoDBStoreFactory,
) -> None:
    """With pages of 7 items forced on every Query and Scan, reads still see everything."""
    pages = {"Query": 0, "Scan": 0}

    def small_pages(params: dict[str, Any], model: Any, **_: Any) -> None:
        params["Limit"] = 7
        pages[model.name] += 1

    rows = [("alice", Frame(ts=T0 + i * 60_000, hr=60.0)) for i in range(60)]  # 60 buckets
    async with dynamodb_store_factory() as store:
        for operation in pages:
            store.client.meta.events.register(
                f"before-parameter-build.dynamodb.{operation}", small_pages
            )
        await store.put_frames(rows)
        for index in range(20):
            user = f"u{index:02d}"
            state = replace(UserState.initial(user), version=1, avatar_status="failed")
            await store.put_state(state, expected_version=0)

        assert await stored(store, "alice") == [f for _, f in rows]
        assert len((await store.export_user("alice", now_ms=T0))["frames"]) == 60
        assert sorted(await store.users_with_avatar_status("failed")) == [
            f"u{i:02d}" for i in range(20)
        ]
        assert len(await store.users_with_avatar_status("failed", limit=9)) == 9
        assert await store.delete_user("alice") == 60
        assert await stored(store, "alice") == []
        # Frames were read three times (read, export, delete), 9 pages of at most 7 each.
        assert pages["Query"] >= 3 * 9 and pages["Scan"] >= 3
