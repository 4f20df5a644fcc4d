"""The token bucket, with time passed in."""

from __future__ import annotations

from server.ratelimit import TokenBucket


def test_a_full_bucket_allows_a_burst_then_refuses() -> None:
    bucket = TokenBucket(rate=1.0, burst=3, now=100.0)
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]


def test_tokens_refill_at_the_rate() -> None:
    bucket = TokenBucket(rate=2.0, burst=2, now=0.0)
    assert bucket.take(0.0) and bucket.take(0.0)
    assert not bucket.take(0.0)
    assert not bucket.take(0.4)  # 0.8 tokens
    assert bucket.take(0.5)  # 1.0 token
    assert not bucket.take(0.5)


def test_refill_is_capped_at_the_burst() -> None:
    bucket = TokenBucket(rate=10.0, burst=2, now=0.0)
    assert [bucket.take(1000.0) for _ in range(3)] == [True, True, False]


def test_a_refused_take_spends_nothing() -> None:
    bucket = TokenBucket(rate=1.0, burst=5, now=0.0)
    assert bucket.take(0.0, cost=4)
    assert not bucket.take(0.0, cost=2)
    assert bucket.take(0.0, cost=1)


def test_time_going_backwards_adds_nothing() -> None:
    bucket = TokenBucket(rate=1.0, burst=1, now=10.0)
    assert bucket.take(10.0)
    assert not bucket.take(5.0)
    assert not bucket.take(5.5)  # measured from the last stamp (5.0): 0.5 tokens
    assert bucket.take(6.0)


def test_buckets_by_key_limit_each_key_alone_and_say_when_to_retry() -> None:
    from server.ratelimit import BucketsByKey

    buckets: BucketsByKey[str] = BucketsByKey(rate=0.5, burst=2)
    assert [buckets.take("a", 0.0) for _ in range(3)] == [0.0, 0.0, 2.0]
    assert buckets.take("b", 0.0) == 0.0
    assert buckets.take("a", 1.0) == 1.0  # half a token saved: one more second
    assert buckets.take("a", 2.0) == 0.0


def test_buckets_by_key_hold_at_most_max_keys_dropping_the_least_recent() -> None:
    from server.ratelimit import BucketsByKey

    buckets: BucketsByKey[int] = BucketsByKey(rate=1.0, burst=1, max_keys=100)
    buckets.take(-1, 0.0)
    for key in range(10_000):
        buckets.take(key, 0.0)
        buckets.take(-1, 0.0)  # kept fresh: never dropped, so still spent
    assert len(buckets) == 100
    assert buckets.take(-1, 0.0) > 0
    assert buckets.take(0, 0.0) == 0.0  # dropped long ago: comes back full
