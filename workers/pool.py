"""`scriptpool worker --processes N`: N worker processes on one host, under one supervisor.

The pool owns the signals. Each worker runs in its own process group, so a terminal's Ctrl-C reaches
only the pool, which decides what the workers get:

- a worker that dies while the pool runs is logged and started again after a pause that doubles
  while it keeps dying young (`scriptpool.core.restarts`);
- the first SIGTERM/SIGINT drains: every worker gets SIGTERM, RQ's warm shutdown (it finishes its
  current job, then exits), and the pool waits up to the grace period for all of them;
- a second SIGTERM/SIGINT, or the grace period running out, kills every worker's process group
  (the worker and its sandbox children) with SIGKILL;
- with `burst`, each worker exits once the queues are empty; one that exits 0 is done, and the pool
  exits when all are.

Every worker is started through `die_with_parent` (from the main thread), so SIGKILL of the pool
still drains its workers. Each worker finds its index (0..N-1) in SCRIPTPOOL_WORKER_INDEX, for
whatever is per process on a host (a metrics port, a log file).

Exit codes (`scriptpool worker --processes N`): 0 every worker stopped on its own (a drain within
the grace period, or a burst that emptied the queues); 1 the pool had to kill workers; 2 bad input
(refused before any worker starts).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import FrameType

from scriptpool.core.die_with_parent import die_with_parent
from scriptpool.core.restarts import Restarts
from scriptpool.errors import InvalidArgument

log = logging.getLogger(__name__)

EXIT_CLEAN = 0
EXIT_KILLED = 1
WORKER_INDEX_VARIABLE = "SCRIPTPOOL_WORKER_INDEX"
MAX_PROCESSES = 256
"""Most worker processes one pool runs (each holds a zygote and a spare sandbox child)."""
DEFAULT_GRACE_SECONDS = 30.0
MAX_GRACE_SECONDS = 3600.0
POLL_SECONDS = 0.2
"""How often the pool looks at its workers and at the signals it received."""


@dataclass(frozen=True, kw_only=True, slots=True)
class PoolSettings:
    processes: int
    """Worker processes to keep running (1..MAX_PROCESSES)."""
    worker_command: tuple[str, ...]
    """The command line of one worker (the CLI builds it: `python -m ... worker [--burst] ...`)."""
    grace_seconds: float = DEFAULT_GRACE_SECONDS
    """After the first SIGTERM/SIGINT, how long the workers have to finish their jobs before they are killed."""
    burst: bool = False
    """The workers exit when the queues are empty, and so does the pool."""

    def __post_init__(self) -> None:
        if not 1 <= self.processes <= MAX_PROCESSES:
            raise InvalidArgument(f"--processes must be from 1 to {MAX_PROCESSES} (got {self.processes})")
        if not 0 <= self.grace_seconds <= MAX_GRACE_SECONDS:
            raise InvalidArgument(
                f"--grace must be from 0 to {MAX_GRACE_SECONDS:g} seconds (got {self.grace_seconds:g})"
            )
        if not self.worker_command:
            raise InvalidArgument("the worker pool needs a worker command")


@dataclass
class _Slot:
    """One worker position (its index stays, its process may be replaced)."""

    index: int
    restarts: Restarts
    process: subprocess.Popen[bytes] | None = None
    finished: bool = False
    """Exited 0 in burst mode: not started again."""


@dataclass
class WorkerPool:
    settings: PoolSettings
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    slots: list[_Slot] = field(default_factory=list)
    signals_seen: int = 0
    """SIGTERM/SIGINT received: the handler only counts (a lock taken in a handler could deadlock
    with the interrupted main thread holding it), and the loop looks every POLL_SECONDS."""

    # -------------------------------------------------------------- signals
    def request_stop(self, signum: int = signal.SIGTERM, frame: FrameType | None = None) -> None:
        """A signal handler: the first call drains, the second kills."""
        self.signals_seen += 1

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self.request_stop)

    # -------------------------------------------------------------- running
    def run(self) -> int:
        """Start the workers and supervise them until they are done; returns the exit code."""
        now = time.monotonic()
        self.slots = [_Slot(index, Restarts(started_at=now)) for index in range(self.settings.processes)]
        try:
            for slot in self.slots:
                self._start(slot)
            log.info("worker pool: %d workers started", len(self.slots))
            return self._supervise()
        finally:
            self._kill_all()  # nothing outlives the pool, whatever ended it

    def _supervise(self) -> int:
        drain_until: float | None = None
        while True:
            now = time.monotonic()
            if self.signals_seen >= 1 and drain_until is None:
                drain_until = now + self.settings.grace_seconds
                self._drain()
            if drain_until is not None:
                if not self._live():
                    log.info("worker pool: all workers stopped")
                    return EXIT_CLEAN
                if self.signals_seen >= 2 or now >= drain_until:
                    why = (
                        "second signal"
                        if self.signals_seen >= 2
                        else f"grace period ({self.settings.grace_seconds:g}s) over"
                    )
                    log.warning("worker pool: %s; killing %d workers", why, len(self._live()))
                    self._kill_all()
                    return EXIT_KILLED
            else:
                self._look_at_workers(now)
                if all(slot.finished for slot in self.slots):
                    log.info("worker pool: every worker found the queues empty")
                    return EXIT_CLEAN
            time.sleep(POLL_SECONDS)

    def _look_at_workers(self, now: float) -> None:
        for slot in self.slots:
            if slot.finished or slot.process is None or slot.process.poll() is None:
                if slot.process is None and slot.restarts.due(now):
                    self._restart(slot, now)
                continue
            code = slot.process.returncode
            if self.settings.burst and code == 0:
                log.info("worker %d (pid %d) found the queues empty", slot.index, slot.process.pid)
                slot.finished = True
                continue
            pause = slot.restarts.died(now)
            log.error(
                "worker %d (pid %d) exited (code %s); starting it again in %.1fs",
                slot.index,
                slot.process.pid,
                code,
                pause,
            )
            slot.process = None
            if slot.restarts.due(now):
                self._restart(slot, now)

    def _restart(self, slot: _Slot, now: float) -> None:
        slot.restarts.started(now)
        try:
            self._start(slot)
        except OSError as exc:
            log.error("worker %d did not start again: %s", slot.index, exc)
            slot.restarts.died(now)

    def _start(self, slot: _Slot) -> None:
        slot.process = subprocess.Popen(
            die_with_parent(self.settings.worker_command),
            env={**self.env, WORKER_INDEX_VARIABLE: str(slot.index)},
            stdin=subprocess.DEVNULL,
            process_group=0,  # the terminal's Ctrl-C is the pool's to handle
        )

    def _live(self) -> list[subprocess.Popen[bytes]]:
        return [slot.process for slot in self.slots if slot.process is not None and slot.process.poll() is None]

    def _drain(self) -> None:
        live = self._live()
        log.info("worker pool: draining %d workers (grace %.0fs)", len(live), self.settings.grace_seconds)
        for process in live:
            process.send_signal(signal.SIGTERM)  # RQ's warm shutdown: the current job finishes

    def _kill_all(self) -> None:
        for process in self._live():
            try:
                os.killpg(process.pid, signal.SIGKILL)  # the worker and the sandbox children in its group
            except ProcessLookupError:
                pass
        for slot in self.slots:
            if slot.process is not None:
                slot.process.wait()


def run_pool(settings: PoolSettings, env: Mapping[str, str] | None = None) -> int:
    pool = WorkerPool(settings, env=dict(os.environ) if env is None else env)
    pool.install_signal_handlers()
    return pool.run()
