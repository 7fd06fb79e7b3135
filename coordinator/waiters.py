"""Wake WaitJob and SubmitJob(s) calls when their jobs finish, from one Redis pub/sub listener thread.

A waiter registers the ids it waits for (one job, or a whole batch) and gets each finished id in
its own `FinishedIds` queue: a batch waiter drains all the ids that arrived at once, so many jobs
ending together cost it one wake-up. A message can only be missed while the listener is not
subscribed (Redis restarting, a reconnect), so each time it subscribes again it tells every waiter
to re-read its records (`FinishedIds.recheck`); waiting calls also re-read them every
`CALL_RECHECK_SECONDS` whatever happens, and the replay runner every `RECHECK_SECONDS`. A missed
message therefore delays a wake-up, never loses it, and a thousand idle waits cost a hundred record
reads a second, not a thousand. The same messages end
finished jobs' cached credentials (`scriptpool.coordinator.credential_cache`): the cache is told when the
listener is (not) subscribed, and a job's credential is dropped before its waiters are woken.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from redis import Redis

from scriptpool.coordinator.credential_cache import JobCredentialCache
from scriptpool.coordinator.metrics import REDIS_ERRORS
from scriptpool.core.keys import FINISHED_CHANNEL
from scriptpool.core.lean_redis import LeanPool, subscribe
from scriptpool.core.repeated_log import RepeatedProblem

log = logging.getLogger(__name__)
RECHECK_SECONDS = 1.0
CALL_RECHECK_SECONDS = 10.0
GATHER_SECONDS = 0.005
"""How long a batch waiter lets finished ids gather after the first before it reads their records:
one wake-up and one round trip for several jobs, for at most this much later answers."""
_INTERRUPT = ""  # (no job id is empty)
_RECHECK = "*"  # (nor "*")


class FinishedIds:
    """The ids of watched jobs as they finish, each once (`JobWaiters.watch_many`)."""

    __slots__ = ("_queue", "recheck_due")

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.recheck_due = False
        """Set when a `take` met `recheck()`: every watched job may have finished unannounced."""

    def put(self, job_id: str) -> None:
        self._queue.put(job_id)

    def take(self, seconds: float, gather: float = 0.0) -> list[str]:
        """Every id that has arrived, waiting up to `seconds` for the first and then `gather` seconds
        for more (so that jobs ending close together are read and answered together); [] when none
        came in time or `interrupt` was called."""
        try:
            ids = [self._queue.get(timeout=max(seconds, 0.0))]
        except queue.Empty:
            return []
        if gather > 0 and ids[0] not in (_INTERRUPT, _RECHECK):
            time.sleep(gather)
        while True:
            try:
                ids.append(self._queue.get_nowait())
            except queue.Empty:
                if _RECHECK in ids:
                    self.recheck_due = True
                return [job_id for job_id in ids if job_id not in (_INTERRUPT, _RECHECK)]

    def interrupt(self) -> None:
        """End a `take` that is waiting now (or the next one) early: the caller has other news."""
        self._queue.put(_INTERRUPT)

    def recheck(self) -> None:
        """End a `take` early with `recheck_due` set: finished messages may have been missed."""
        self._queue.put(_RECHECK)


class JobWaiters:
    def __init__(self, redis: Redis, credentials: JobCredentialCache | None = None) -> None:
        self.redis = redis
        self.credentials = credentials if credentials is not None else JobCredentialCache()
        self._lock = threading.Lock()
        self._watchers: dict[str, list[FinishedIds]] = {}
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="job-waiters", daemon=True)
        self._lean = LeanPool(redis)
        self._lost = RepeatedProblem(log, "job-finished listener lost Redis")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)

    def _listen(self) -> None:
        while not self._stopping.is_set():
            try:
                for data in self._finished_messages():
                    if self._stopping.is_set():
                        break
                    if data == b"":
                        self._lost.over()
                        self.credentials.listening(True)
                        self._recheck_all()
                    elif data is not None:
                        self._wake(data.decode())
            except Exception as exc:
                REDIS_ERRORS.inc()
                self._lost.happened(f"{exc}; reconnecting")
                self.credentials.listening(False)
                self._stopping.wait(0.5)
            finally:
                self.credentials.listening(False)

    def _finished_messages(self) -> Iterator[bytes | None]:
        """b"" once subscribed, then each finished job id, None every 0.5 s without one: over a lean
        connection whose replies hiredis parses (redis-py's pub/sub was a tenth of the coordinator's
        CPU per job), or redis-py's pub/sub where the lean client does not apply."""
        if self._lean.supported:
            yield from subscribe(self._lean, FINISHED_CHANNEL, 0.5)
            return
        pubsub = self.redis.pubsub()  # type: ignore[no-untyped-call]
        try:
            pubsub.subscribe(FINISHED_CHANNEL)
            while True:
                message = pubsub.get_message(timeout=0.5)
                if not message:
                    yield None
                elif message["type"] == "subscribe":
                    yield b""
                elif message["type"] == "message":
                    yield message["data"]
        finally:
            pubsub.close()

    def _wake(self, job_id: str) -> None:
        self.credentials.forget_job(job_id)
        with self._lock:
            watchers = self._watchers.pop(job_id, ())
        for watcher in watchers:
            watcher.put(job_id)

    def _recheck_all(self) -> None:
        """Subscribed (again): any job that ended meanwhile was not announced, so every waiter re-reads."""
        with self._lock:
            everyone = {id(f): f for watchers in self._watchers.values() for f in watchers}
        for finished in everyone.values():
            finished.recheck()

    def add(self, job_id: str, finished: FinishedIds) -> None:
        """Put `job_id` into the long-lived `finished` once it finishes (the replay runner's queue).
        Add it before the job is written; if it is found finished otherwise (a lost message), `discard`."""
        with self._lock:
            self._watchers.setdefault(job_id, []).append(finished)

    def discard(self, job_id: str, finished: FinishedIds) -> None:
        with self._lock:
            listed = self._watchers.get(job_id)
            if listed is not None and finished in listed:
                listed.remove(finished)
                if not listed:
                    del self._watchers[job_id]

    @contextmanager
    def watch_many(self, job_ids: Sequence[str]) -> Iterator[FinishedIds]:
        """Get the ids of `job_ids` as they finish, each once, from the yielded `FinishedIds`. Enter
        before the jobs are written or read (so no end is missed); a message lost while the listener
        reconnects is not replayed: the caller re-reads the still unfinished jobs when `recheck_due` is
        set, and every `CALL_RECHECK_SECONDS`."""
        finished = FinishedIds()
        watchers = self._watchers
        with self._lock:
            for job_id in job_ids:
                listed = watchers.get(job_id)
                if listed is None:
                    watchers[job_id] = [finished]
                else:
                    listed.append(finished)
        try:
            yield finished
        finally:
            with self._lock:
                for job_id in job_ids:
                    listed = watchers.get(job_id)
                    if listed is not None and finished in listed:
                        listed.remove(finished)
                        if not listed:
                            del watchers[job_id]
