"""Rate-limit buckets in the database: two limiters on one database (two replicas) allow one burst together."""

from __future__ import annotations

import threading

import pytest

from app.auth import RateBuckets, RateLimiter
from core.db import DatabaseTarget


class Ticks:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_two_limiters_on_one_database_share_each_bucket(db_target: DatabaseTarget) -> None:
    ticks = Ticks()
    stores = [RateBuckets(db_target), RateBuckets(db_target)]  # each replica opens its own
    a, b = (RateLimiter(60, 4, clock=ticks, shared=s, scope="conversation") for s in stores)
    try:
        taken = [(a, b)[i % 2].take("c-1") for i in range(6)]
        assert taken[:4] == [0.0] * 4
        assert taken[4] == pytest.approx(1.0) and taken[5] == pytest.approx(1.0)  # empty, on both
        assert b.take("c-2") == 0.0  # a bucket per key
        other_scope = RateLimiter(60, 4, clock=ticks, shared=stores[0], scope="client address")
        assert other_scope.take("c-1") == 0.0  # and per scope
        ticks.now += 1.0  # one token refilled: one of the two replicas gets it
        assert sorted([a.take("c-1"), b.take("c-1")])[0] == 0.0
        assert a.take("c-1") > 0 and b.take("c-1") > 0
    finally:
        for store in stores:
            store.close()


@pytest.mark.postgres
def test_replicas_taking_at_once_never_spend_the_same_token(pg_url: str) -> None:
    from core.db import DatabaseUrl

    ticks = Ticks()
    stores = [RateBuckets(DatabaseUrl(pg_url)) for _ in range(2)]
    limiters = [RateLimiter(60, 10, clock=ticks, shared=s, scope="conversation") for s in stores]
    granted: list[bool] = []
    start = threading.Barrier(8)

    def spend(limiter: RateLimiter) -> None:
        start.wait()
        for _ in range(5):
            granted.append(limiter.take("busy") == 0.0)

    threads = [threading.Thread(target=spend, args=(limiters[i % 2],)) for i in range(8)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert len(granted) == 40
        assert granted.count(True) == 10  # the burst once, over both replicas and eight threads
    finally:
        for store in stores:
            store.close()
