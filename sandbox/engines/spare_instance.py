"""One engine instance built ahead of its job, in a spare child, for that job only.

An engine whose instance and prelude cost real time (Lua, JavaScript) builds the next job's
instance while the spare child waits: `prepare(memory_bytes)`. The job `take`s it if it was built
for the job's memory limit; otherwise the prepared one is discarded and a new one is built for the
job. Either way an instance serves exactly one job and has run nothing but its prelude before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, Protocol, TypeVar


class Prepared(Protocol):
    memory_bytes: int

    def discard(self) -> None: ...


P = TypeVar("P", bound=Prepared)


class SpareInstance(Generic[P]):
    def __init__(self, build: Callable[[int], P]) -> None:
        self._build = build
        self._ready: P | None = None

    def prepare(self, memory_bytes: int) -> None:
        """Build the next job's instance now (in a spare child, before the job and the jail)."""
        if self._ready is None:
            self._ready = self._build(memory_bytes)

    @property
    def ready(self) -> P | None:
        return self._ready

    def take(self, memory_bytes: int) -> P:
        """The prepared instance if it fits the job's memory limit, else a new one for it."""
        prepared, self._ready = self._ready, None
        if prepared is not None and prepared.memory_bytes == memory_bytes:
            return prepared
        if prepared is not None:
            prepared.discard()
        return self._build(memory_bytes)
