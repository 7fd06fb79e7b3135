"""The lease is renewed from its own thread, so a supervisor blocked on a slow call keeps its job."""

from __future__ import annotations

import threading
import time
import uuid

from redis import Redis

from scriptpool.core.job_records import JobRecords
from scriptpool.core.keys import LEASES_KEY, job_key
from scriptpool.workers.lease import LeaseKeeper


def test_lease_is_renewed_while_the_caller_is_blocked_and_reports_cancel(redis_client: Redis) -> None:
    records = JobRecords(redis_client, lease_seconds=0.3)
    job_id = str(uuid.uuid4())
    redis_client.hset(job_key(job_id), mapping={"status": "running"})
    redis_client.zadd(LEASES_KEY, {job_id: time.time() + 0.3})
    keeper = LeaseKeeper(records)
    try:
        with keeper.hold(job_id) as lease:
            time.sleep(1.0)  # the supervisor "blocked" three lease lengths
            assert job_id not in records.expired_leases(time.time())
            assert not lease.should_stop
            redis_client.hset(job_key(job_id), "cancel_requested", "1")
            time.sleep(0.3)
            assert lease.cancel_requested and lease.should_stop
        redis_client.hset(job_key(job_id), "status", "finished")
        with keeper.hold(job_id) as lease:  # the same keeper thread, the next job
            time.sleep(0.3)
            assert lease.not_running
        threads = [t.name for t in threading.enumerate()].count("lease-keeper")
        assert threads == 1
        renewed_until = redis_client.zscore(LEASES_KEY, job_id)
        time.sleep(0.4)  # no job held: nothing is renewed (the coordinator's sweeper may drop the entry)
        assert redis_client.zscore(LEASES_KEY, job_id) in (renewed_until, None)
    finally:
        keeper.close()
        records.close()
        redis_client.delete(job_key(job_id))
        redis_client.zrem(LEASES_KEY, job_id)
