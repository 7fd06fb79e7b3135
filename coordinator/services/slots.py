"""A cap on long-lived RPCs of one kind (each holds one of the gRPC server's threads while it lasts)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from scriptpool.errors import ResourceExhausted


class Slots:
    def __init__(self, limit: int, what: str, instead: str) -> None:
        self.limit = limit
        self.what = what
        self.instead = instead
        self.taken = 0
        self._lock = threading.Lock()

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Hold one slot for the block; RESOURCE_EXHAUSTED (saying what to do instead) if none is free."""
        with self._lock:
            if self.taken >= self.limit:
                raise ResourceExhausted(f"this coordinator already serves {self.limit} {self.what}; {self.instead}")
            self.taken += 1
        try:
            yield
        finally:
            with self._lock:
                self.taken -= 1
