"""Admission control of job submissions (docs/adr/0020-quotas.md): the principal's queued-jobs quota
and its submission token bucket, checked in the same Lua script that then runs the submission's
writes (`lua/jobs_admit.lua`), so a batch over either is refused whole with nothing written, and
two coordinators admitting at once cannot both pass a limit.

The script is sent with EVALSHA inside the submit's MULTI (so a WAIT for replicas and an idempotency
key's WATCH work as before); a Redis that lost the script answers NOSCRIPT before anything ran, and
`Admission.run` loads it and sends the submission again.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from redis import Redis
from redis.exceptions import NoScriptError, ResponseError

from scriptpool.coordinator.metrics import QUOTA_REFUSALS
from scriptpool.coordinator.settings import Settings
from scriptpool.coordinator.stores import lua
from scriptpool.coordinator.stores.fair_queue import REORDER_SCRIPT
from scriptpool.coordinator.stores.quotas import LUA_QUOTA_LIMIT, exceeded, number
from scriptpool.core import lua as core_lua
from scriptpool.core.event_streams import APPEND_SCRIPT, LUA_APPEND_EVENT
from scriptpool.core.keys import queued_jobs_key, quota_key, submit_bucket_key
from scriptpool.core.lean_redis import Arg, Reply
from scriptpool.errors import ResourceExhausted

REPAIR_SCAN = 100
"""Oldest ids of a principal's queued-jobs index a refusal checks against their records (ADR 0020)."""
_INLINE = {APPEND_SCRIPT: core_lua.load("append"), REORDER_SCRIPT: REORDER_SCRIPT}
"""The scripts a submission's writes EVAL, each with the body the admission script runs in its place
(Lua cannot EVAL): as a function `inline['N'](KEYS, ARGV)`, whose parameters shadow the globals its
body reads."""
_INLINE_NUMBERS = {source: str(number) for number, source in enumerate(_INLINE, 1)}
_INLINE_LUA = "local inline = {}\n" + "".join(
    f"inline['{_INLINE_NUMBERS[source]}'] = function(KEYS, ARGV)\n{body}\nend\n" for source, body in _INLINE.items()
)
_ADMIT = LUA_QUOTA_LIMIT + LUA_APPEND_EVENT + _INLINE_LUA + lua.script("jobs_admit", REPAIR_SCAN=REPAIR_SCAN)
_SHA = hashlib.sha1(_ADMIT.encode()).hexdigest()

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Admission:
    redis: Redis
    max_queued_jobs: int
    max_rate: float
    max_burst: int

    @classmethod
    def from_settings(cls, redis: Redis, settings: Settings) -> Admission:
        """The server maximums of `settings` (every principal's limits without an override)."""
        return cls(
            redis,
            settings.max_queued_jobs_per_principal,
            settings.max_submissions_per_second,
            settings.max_submission_burst,
        )

    def command(self, principal: str, jobs: int, writes: Sequence[Sequence[Arg]]) -> tuple[Arg, ...]:
        """The EVALSHA that admits `jobs` jobs of `principal` and then runs `writes` (or refuses)."""
        args: list[Arg] = [jobs, self.max_queued_jobs, repr(float(self.max_rate)), self.max_burst]
        for write in writes:
            if write[0] == "EVAL":  # (a script of `_INLINE`: its number, then its key count, keys and arguments)
                assert write[1] in _INLINE_NUMBERS, "the admission script runs only the scripts of _INLINE"
                write = ("@inline", _INLINE_NUMBERS[str(write[1])], *write[2:])
            args.append(len(write))
            args.extend(write)
        keys = (quota_key(principal), queued_jobs_key(principal), submit_bucket_key(principal))
        return ("EVALSHA", _SHA, len(keys), *keys, *args)

    def run(self, send: Callable[[], T]) -> T:
        """`send()` (a submission carrying `command`), again once after loading the script if Redis
        did not have it (NOSCRIPT: nothing of that submission ran)."""
        try:
            return send()
        except ResponseError as exc:  # (NoScriptError, or a plain one when it came inside EXEC's reply)
            if not isinstance(exc, NoScriptError) and not str(exc).startswith("NOSCRIPT"):
                raise
            self.redis.script_load(_ADMIT)
            return send()

    @staticmethod
    def check(principal: str, jobs: int, reply: Reply) -> None:
        """RESOURCE_EXHAUSTED, naming the quota, its limit and use, unless the script admitted the jobs."""
        assert isinstance(reply, list)
        verdict = [value.decode() if isinstance(value, bytes) else str(value) for value in reply]
        if verdict[0] == "ok":
            return
        if verdict[0] == "queued_jobs":
            limit, held = float(verdict[1]), float(verdict[2])
            raise exceeded(
                principal, "queued_jobs", limit, held, jobs, "wait for some of its queued jobs to start or cancel them"
            )
        rate, burst, tokens, wait = (float(value) for value in verdict[1:5])
        QUOTA_REFUSALS.labels("submissions_per_second").inc()
        if wait < 0:
            why = f"a batch of {jobs} jobs is over its burst of {number(burst)}" if rate > 0 else "its rate is 0"
            raise ResourceExhausted(
                f"quota submissions_per_second of principal {principal!r}: limit {number(rate)} jobs per second, "
                f"burst {number(burst)} (submission_burst); {number(math.floor(tokens))} tokens left; {why}: "
                "this submission can never pass; split the batch or ask the operator for a higher quota"
            )
        raise ResourceExhausted(
            f"quota submissions_per_second of principal {principal!r}: limit {number(rate)} jobs per second, "
            f"burst {number(burst)} (submission_burst); {number(math.floor(tokens))} tokens left, {jobs} needed; "
            f"retry after {wait:.3f} s"
        )
