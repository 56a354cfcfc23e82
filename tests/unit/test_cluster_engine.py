"""The Ray engine's parts that need no cluster: the shared rate limit's booking, the
request counts that travel from workers, and the engine choice."""

from __future__ import annotations

import pytest

from pixdedup.engines import engine_for
from pixdedup.engines.cluster import RateLimiter
from pixdedup.errors import ConfigError
from pixdedup.sources.ratelimit import RequestStats


def test_the_shared_limiter_books_requests_at_the_rate_after_a_small_burst(monkeypatch):
    now = [100.0]
    monkeypatch.setattr("pixdedup.engines.cluster.time.monotonic", lambda: now[0])
    limiter = RateLimiter(20.0)  # 20/s: a burst of 2, then one every 50 ms
    waits = [limiter.reserve() for _ in range(22)]
    assert waits[:2] == [0.0, 0.0]
    assert waits[2:] == pytest.approx([0.05 * k for k in range(1, 21)])
    assert limiter.count() == 22
    now[0] += 10.0  # idle: the burst is back, never more
    assert [limiter.reserve() for _ in range(3)] == pytest.approx([0.0, 0.0, 0.05])


def test_worker_request_counts_are_drained_and_merged():
    worker, driver = RequestStats(), RequestStats()
    worker.requests, worker.bytes_downloaded, worker.failures = 5, 1000, 1
    worker.retries["503"] += 2
    driver.merge(worker.drain())
    driver.merge(worker.drain())  # nothing twice
    assert driver.as_dict() == {"requests": 5, "retries": 2, "retries_by_reason": {"503": 2},
                                "bytes_downloaded": 1000, "failed_requests": 1}
    assert worker.as_dict()["requests"] == 0


def test_an_address_is_for_the_cluster_engine():
    with pytest.raises(ConfigError, match="--engine ray"):
        engine_for("local", 2, "auto")


def test_an_unreachable_cluster_is_a_one_line_error_at_once():
    from pixdedup.engines.cluster import _reachable

    from ..cloud.servers import free_port

    with pytest.raises(ConfigError, match="cannot reach the Ray cluster at 127.0.0.1:"):
        _reachable(f"127.0.0.1:{free_port()}", timeout=2)
    _reachable("auto")  # left to Ray


def test_the_shared_limiter_is_one_key_in_every_process_that_unpickles_it():
    """A worker opens its bucket once per limiter (``BucketAddress.open`` caches by the
    limiter's key): the key must survive pickling, or every task would open a new client."""
    import pickle

    from pixdedup.engines.cluster import SharedTokenBucket

    limiter = SharedTokenBucket(actor="an actor handle", rate=20.0)
    copies = [pickle.loads(pickle.dumps(limiter)) for _ in range(3)]
    assert {c.key for c in copies} == {limiter.key} and copies[0].rate == 20.0
