"""The budget of calls that wait: how many may wait at once, in all and per principal.

A waiting call (`WaitJob`, `SubmitJob`/`SubmitJobs` with a wait, `Event.receive` and
`HookService.Poll` with a timeout, `EventService.Stream`) holds one of the gRPC server's threads
while it waits. The server has `grpc_threads` threads for every other call *plus* one per waiting
call this budget allows (`scriptpool.coordinator.server`), so waits can never take the threads other calls
need: past the budget a new wait is refused at once with RESOURCE_EXHAUSTED (naming the limit and
its use) instead of queuing behind the others. Waits that block on Redis (`Event.receive`, `Poll`)
each also hold a Redis connection, so they have a smaller cap of their own (`max_event_waits`).
docs/adr/0005-waiting-calls.md says why threads and not an asyncio server.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from scriptpool.coordinator.auth import Caller
from scriptpool.errors import ResourceExhausted


class WaitingCalls:
    def __init__(self, limit: int, per_principal: int, event_waits: int) -> None:
        self.limit = limit
        self.per_principal = per_principal
        self.event_waits_limit = event_waits
        self.taken = 0
        self.event_waits = 0
        self._by_principal: dict[str, int] = {}
        self._lock = threading.Lock()

    @contextmanager
    def hold(self, caller: Caller, *, blocks_on_redis: bool = False) -> Iterator[None]:
        """Count the block as one waiting call of `caller`'s principal (and, if it blocks on a Redis
        connection, as one event wait); RESOURCE_EXHAUSTED, before anything is done, if it does not fit."""
        principal = caller.principal
        with self._lock:
            mine = self._by_principal.get(principal, 0)
            if self.taken >= self.limit:
                raise ResourceExhausted(
                    f"this coordinator already holds {self.taken} waiting calls (max_waiting_calls "
                    f"{self.limit}); retry later, or wait with fewer calls (SubmitJobs waits for a whole batch)"
                )
            if mine >= self.per_principal:
                raise ResourceExhausted(
                    f"this principal already holds {mine} waiting calls on this coordinator "
                    f"(max_waiting_calls_per_principal {self.per_principal}); end some first, or wait for "
                    "many jobs in one call (SubmitJobs with wait_seconds)"
                )
            if blocks_on_redis and self.event_waits >= self.event_waits_limit:
                raise ResourceExhausted(
                    f"this coordinator already holds {self.event_waits} event waits (max_event_waits "
                    f"{self.event_waits_limit}); retry later or with a shorter timeout"
                )
            self.taken += 1
            self._by_principal[principal] = mine + 1
            if blocks_on_redis:
                self.event_waits += 1
        try:
            yield
        finally:
            with self._lock:
                self.taken -= 1
                left = self._by_principal[principal] - 1
                if left:
                    self._by_principal[principal] = left
                else:
                    del self._by_principal[principal]
                if blocks_on_redis:
                    self.event_waits -= 1

    def held_by(self, principal: str) -> int:
        with self._lock:
            return self._by_principal.get(principal, 0)
