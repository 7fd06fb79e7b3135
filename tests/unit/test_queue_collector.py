"""The coordinator's queue gauges, read at scrape time: bounded when Redis is gone or hangs."""

from __future__ import annotations

import socket

from redis import Redis

from scriptpool.coordinator.metrics import REDIS_ERRORS, QueueCollector


def _errors() -> float:
    return next(s.value for m in REDIS_ERRORS.collect() for s in m.samples if s.name.endswith("_total"))


def test_a_redis_that_does_not_answer_leaves_the_gauges_out_and_counts_an_error() -> None:
    # accepts connections (the kernel's backlog) but never replies: the scrape's timeout ends it
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        redis = Redis(host="127.0.0.1", port=port)
        collector = QueueCollector(redis, "q", "rq:queue:q")
        before = _errors()
        assert list(collector.collect()) == []
        assert _errors() == before + 1
        redis.close()


def test_a_scrape_while_another_reads_redis_leaves_the_gauges_out() -> None:
    redis = Redis(host="127.0.0.1", port=1)
    collector = QueueCollector(redis, "q", "rq:queue:q")
    with collector._reading:  # another scrape is reading
        before = _errors()
        assert list(collector.collect()) == []
        assert _errors() == before  # it did not touch Redis
    redis.close()


def test_the_families_are_described_without_reading_redis() -> None:
    collector = QueueCollector(Redis(host="127.0.0.1", port=1), "q", "rq:queue:q")
    assert [family.name for family in collector.describe()] == ["scriptpool_queue_depth", "scriptpool_rq_workers"]
