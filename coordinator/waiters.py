"""Wake WaitJob calls when their job finishes, from one Redis pub/sub listener thread.

Waiters also re-read the record every `RECHECK_SECONDS`, so a missed message (Redis reconnect)
delays a wake-up but never loses it. The same messages end finished jobs' cached credentials
(`coordinator.credential_cache`): the cache is told when the listener is (not) subscribed, and a
job's credential is dropped before its waiters are woken.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from redis import Redis

from coordinator.credential_cache import JobCredentialCache
from workers.job_records import FINISHED_CHANNEL

log = logging.getLogger(__name__)
RECHECK_SECONDS = 1.0


class JobWaiters:
    def __init__(self, redis: Redis, credentials: JobCredentialCache | None = None) -> None:
        self.redis = redis
        self.credentials = credentials if credentials is not None else JobCredentialCache()
        self._lock = threading.Lock()
        self._events: dict[str, set[threading.Event]] = defaultdict(set)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="job-waiters", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)

    def _listen(self) -> None:
        while not self._stopping.is_set():
            pubsub = self.redis.pubsub()  # type: ignore[no-untyped-call]
            try:
                pubsub.subscribe(FINISHED_CHANNEL)
                while not self._stopping.is_set():
                    message = pubsub.get_message(timeout=0.5)
                    if not message:
                        continue
                    if message["type"] == "subscribe":
                        self.credentials.listening(True)
                    elif message["type"] == "message":
                        self._wake(message["data"].decode())
            except Exception as exc:
                log.warning("job-finished listener lost Redis (%s); reconnecting", exc)
                self.credentials.listening(False)
                self._stopping.wait(0.5)
            finally:
                self.credentials.listening(False)
                pubsub.close()

    def _wake(self, job_id: str) -> None:
        self.credentials.forget_job(job_id)
        with self._lock:
            for event in self._events.pop(job_id, ()):
                event.set()

    @contextmanager
    def watch(self, job_id: str) -> Iterator[Callable[[float], None]]:
        """Be woken when `job_id` finishes. Read the job *after* entering (so a finish between the read
        and the wait is not missed), then call the yielded `wait(seconds)` until it is finished; the
        caller re-reads the job after each wait (every `RECHECK_SECONDS` at the latest)."""
        event = threading.Event()
        with self._lock:
            self._events[job_id].add(event)

        def wait(seconds: float) -> None:
            event.wait(min(seconds, RECHECK_SECONDS))
            event.clear()

        try:
            yield wait
        finally:
            with self._lock:
                waiting = self._events.get(job_id)
                if waiting is not None:
                    waiting.discard(event)
                    if not waiting:
                        del self._events[job_id]
