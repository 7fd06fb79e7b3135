"""A job-finished message is missed only while the coordinator's listener is not subscribed; each time
it subscribes again, every waiting call is told to re-read its jobs (so waits can re-read rarely
otherwise: a thousand idle waits are not a thousand reads a second)."""

from __future__ import annotations

from pathlib import Path

from redis import Redis

from scriptpool.coordinator.redis_server import PrivateRedis
from scriptpool.coordinator.waiters import JobWaiters
from scriptpool.core.keys import FINISHED_CHANNEL
from tests.conftest import wait_for


def _subscribers(redis: Redis) -> int:
    return int(dict(redis.pubsub_numsub(FINISHED_CHANNEL))[FINISHED_CHANNEL.encode()])


def test_every_waiter_rechecks_when_the_listener_subscribes_again(tmp_path: Path) -> None:
    with PrivateRedis(tmp_path / "redis", die_with_parent=True) as private:  # (its pub/sub clients are killed)
        _rechecks_after_a_reconnect(Redis.from_url(private.url))


def _rechecks_after_a_reconnect(redis: Redis) -> None:
    waiters = JobWaiters(redis)
    waiters.start()
    try:
        assert wait_for(lambda: _subscribers(redis) == 1)
        with waiters.watch_many(["job-a", "job-b"]) as batch, waiters.watch_many(["job-c"]) as single:
            assert batch.take(0.05) == [] and not batch.recheck_due  # nothing yet
            redis.client_kill_filter(_type="pubsub")  # the listener's connection drops: messages may be lost
            for finished in (batch, single):
                assert finished.take(30) == []  # woken with no id ...
                assert finished.recheck_due  # ... but told to re-read every job it waits for
    finally:
        waiters.stop()
        redis.close()
