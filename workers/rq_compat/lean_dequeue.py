"""RQ's dequeue (move the next job id to the intermediate queue, then read the job's hash) in one
round trip over the lean RESP2 connection (`proto/scriptpool/core/lean_redis.py`).

RQ's `Queue.dequeue_any` for a single queue on Redis >= 6.2 sends `BLMOVE queue intermediate LEFT
RIGHT` and then `HGETALL rq:job:{id}` (`Job.fetch`), both through redis-py. Here, when the queue
has a job, one script does both (`LMOVE` + `HGETALL`, atomically); only an empty queue falls back to
the blocking `BLMOVE` (then the `HGETALL`). The same keys move the same way, and the `Job` is built
by RQ's own `Job.restore` from the same hash, so RQ, `rq info` and rq-dashboard see no difference.
Several queues, older servers and connections the lean client does not speak use RQ's method.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from redis import Redis
from rq import Queue
from rq.exceptions import DequeueTimeout
from rq.job import Job

from scriptpool.core.lean_redis import LeanPool, LeanScript, Reply, pack_command
from scriptpool.core.rq_internals import IntermediateQueue, get_version

_MOVE_AND_READ = """
local id = redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT')
if not id then return false end
return {id, redis.call('HGETALL', ARGV[1] .. id)}
"""


def lean_queue_class(base: type[Queue], redis: Redis, pool: LeanPool) -> type[Queue]:
    """A subclass of `base` whose `dequeue_any` dequeues over `pool` (see the module docstring)."""
    move_and_read = LeanScript(redis, pool, _MOVE_AND_READ)

    class LeanQueue(base):  # type: ignore[valid-type, misc]
        @classmethod
        def dequeue_any(
            cls,
            queues: Iterable[Queue],
            timeout: int | None,
            connection: Redis,
            job_class: type[Job] | None = None,
            serializer: Any = None,
            death_penalty_class: Any = None,
        ) -> tuple[Job, Queue] | None:
            queues = list(queues)
            if len(queues) != 1 or not pool.supported or get_version(connection) < (6, 2, 0):
                return super().dequeue_any(  # type: ignore[no-any-return]
                    queues,
                    timeout,
                    connection=connection,
                    job_class=job_class,
                    serializer=serializer,
                    death_penalty_class=death_penalty_class,
                )
            queue = queues[0]
            job_cls = job_class or queue.job_class
            while True:
                moved = _move(queue, job_cls, timeout, move_and_read, pool)
                if moved is None:
                    return None
                job_id, raw = moved
                if not raw:
                    continue  # the job's hash is gone: RQ skips such ids too
                job = job_cls(job_id, connection=connection, serializer=serializer)
                try:
                    job.restore(raw)
                except Exception as exc:  # as RQ's _fetch_dequeued_job: say which job and queue
                    exc.job_id = job_id  # type: ignore[attr-defined]
                    exc.queue = queue  # type: ignore[attr-defined]
                    raise
                return job, queue

    return LeanQueue


def _move(
    queue: Queue, job_cls: type[Job], timeout: int | None, move_and_read: LeanScript, pool: LeanPool
) -> tuple[str, dict[bytes, bytes]] | None:
    """Move the next job id to the intermediate queue and read its hash. None: no job and no
    `timeout` (RQ's burst mode); raises DequeueTimeout when a blocking wait found nothing."""
    intermediate = IntermediateQueue.get_intermediate_queue_key(queue.key)
    prefix = job_cls.redis_job_namespace_prefix
    found = move_and_read(keys=[queue.key, intermediate], args=[prefix])
    if isinstance(found, list):
        moved_id, read = found
        assert isinstance(moved_id, bytes) and isinstance(read, list)
        return moved_id.decode(), _pairs(read)
    if timeout is None:
        return None
    if timeout == 0:
        raise ValueError("RQ does not support indefinite timeouts. Please pick a timeout value > 0")
    moved = _blocking(pool, "BLMOVE", queue.key, intermediate, "LEFT", "RIGHT", timeout)
    if moved is None:
        raise DequeueTimeout(timeout, queue.key)
    assert isinstance(moved, bytes)
    job_id = moved.decode()
    flat = _blocking(pool, "HGETALL", prefix + job_id)
    assert isinstance(flat, list)
    return job_id, _pairs(flat)


def _blocking(pool: LeanPool, *command: Any) -> Reply:
    """A command whose reply may be interrupted (a signal handler raising while BLMOVE waits): the
    connection is then out of step, so it is dropped."""
    conn = pool.send(pack_command(*command))
    try:
        return conn._reply()
    except OSError as exc:  # RQ's worker loop retries on redis-py's ConnectionError
        raise pool.lost(exc, "dequeue") from exc
    except BaseException:
        pool.discard()
        raise


def _pairs(flat: list[Reply]) -> dict[bytes, bytes]:
    return {key: value for key, value in zip(flat[::2], flat[1::2], strict=True)}  # type: ignore[misc]
