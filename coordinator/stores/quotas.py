"""Per-principal quotas (docs/adr/0020-quotas.md): each a server maximum in `Settings`, which is
also every principal's default, and an optional override per principal, stored in Redis

  sp:principal:{p}:quota  hash: quota name -> limit (`scriptpool quota set`)

and capped by the server maximum where it is read (in the enforcing Lua script, `quota_limit.lua`,
or in `QuotaStore.limit`), so lowering a maximum lowers every override above it at once.

Every refusal is RESOURCE_EXHAUSTED through `exceeded`, whose message names the quota, its limit and
the current use.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from redis import Redis

from scriptpool.coordinator.metrics import QUOTA_REFUSALS
from scriptpool.coordinator.stores import lua
from scriptpool.core.keys import (
    principal_artifact_bytes_key,
    principal_sessions_key,
    principal_subscriptions_key,
    queued_jobs_key,
    quota_key,
    running_jobs_key,
    state_bytes_key,
    submit_bucket_key,
)
from scriptpool.errors import InvalidArgument, ResourceExhausted

LUA_QUOTA_LIMIT = lua.script("quota_limit")
"""The Lua function `quota_limit(key, name, max)`, for the scripts that enforce a quota."""


@dataclass(frozen=True, slots=True)
class Quota:
    name: str
    """Its field in the override hash, its `scriptpool quota set --NAME` flag (with dashes)."""
    setting: str
    """The `Settings` field holding its server maximum (and default)."""
    unit: str
    whole: bool = True
    """A count or a byte size (False: a rate, any finite number)."""
    enforced: bool = True


QUOTAS: tuple[Quota, ...] = (
    Quota("queued_jobs", "max_queued_jobs_per_principal", "jobs"),
    Quota("running_jobs", "max_running_jobs_per_principal", "jobs", enforced=False),
    Quota("submissions_per_second", "max_submissions_per_second", "jobs per second", whole=False),
    Quota("submission_burst", "max_submission_burst", "jobs"),
    Quota("sessions", "max_sessions_per_principal", "sessions"),
    Quota("artifact_bytes", "max_principal_artifact_bytes", "bytes"),
    Quota("state_bytes", "max_principal_state_bytes", "bytes"),
    Quota("subscriptions", "max_subscriptions_per_principal", "subscriptions"),
)
BY_NAME = {quota.name: quota for quota in QUOTAS}


def maxima(settings: object) -> dict[str, float]:
    """Every quota's server maximum, read from a `Settings`."""
    return {quota.name: getattr(settings, quota.setting) for quota in QUOTAS}


def number(value: float) -> str:
    """A limit or a use as a person reads it (whole numbers without a fraction)."""
    return str(int(value)) if float(value).is_integer() else f"{value:.3g}"


def capped(override: bytes | str | float | None, maximum: float) -> float:
    """A principal's limit: its override (as stored, or None) capped by the server maximum, or that maximum."""
    return maximum if override is None else min(float(override), maximum)


def _stored(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))  # (exact, unlike `number`)


def exceeded(principal: str, name: str, limit: float, used: float, asked: float, hint: str) -> ResourceExhausted:
    """The refusal of `asked` more of quota `name`: `used` held, `limit` allowed (and counted in
    `scriptpool_quota_refusals_total`)."""
    quota = BY_NAME[name]
    QUOTA_REFUSALS.labels(name).inc()
    return ResourceExhausted(
        f"quota {name} of principal {principal!r}: {number(used)} {quota.unit} in use, limit {number(limit)} "
        f"(`scriptpool quota`, at most the server's {quota.setting}); {number(asked)} more would pass it; {hint}"
    )


def check_override(server_maxima: Mapping[str, float], name: str, value: float) -> float:
    """InvalidArgument unless `value` may be an override of quota `name` (0 to its server maximum)."""
    quota = BY_NAME.get(name)
    if quota is None:
        raise InvalidArgument(f"unknown quota {name!r}; the quotas are {', '.join(BY_NAME)}")
    if not math.isfinite(value) or value < 0:
        raise InvalidArgument(f"{name}: {value:g} is not a limit; give a number from 0 up")
    if quota.whole and not float(value).is_integer():
        raise InvalidArgument(f"{name}: {value} is not a whole number of {quota.unit}")
    maximum = server_maxima[name]
    if value > maximum:
        raise InvalidArgument(
            f"{name}: {number(value)} is above the server maximum of {number(maximum)} {quota.unit} "
            f"({quota.setting}); raise that setting first"
        )
    return value


class QuotaStore:
    """Reads and writes the overrides; `usage` reads what each quota counts."""

    def __init__(self, redis: Redis, server_maxima: Mapping[str, float]) -> None:
        self.redis = redis
        self.maxima = dict(server_maxima)

    def overrides(self, principal: str) -> dict[str, float]:
        raw = self.redis.hgetall(quota_key(principal))
        found = {}
        for field, value in raw.items():
            name = field.decode() if isinstance(field, bytes) else str(field)
            if name in BY_NAME:
                found[name] = float(value)
        return found

    def limits(self, principal: str) -> dict[str, float]:
        """Every quota's limit for `principal` (`capped`)."""
        mine = self.overrides(principal)
        return {name: capped(mine.get(name), maximum) for name, maximum in self.maxima.items()}

    def check(self, name: str, value: float) -> float:
        return check_override(self.maxima, name, value)

    def set(self, principal: str, values: Mapping[str, float]) -> None:
        """Set overrides, all checked before any is written."""
        checked = {name: _stored(self.check(name, value)) for name, value in values.items()}
        if checked:
            self.redis.hset(quota_key(principal), mapping=checked)  # type: ignore[arg-type]

    def reset(self, principal: str, names: list[str]) -> None:
        """Drop the overrides `names` (all of them when empty): the server maxima apply again."""
        for name in names:
            self.check(name, 0)
        if names:
            self.redis.hdel(quota_key(principal), *names)
        else:
            self.redis.delete(quota_key(principal))

    def usage(self, principal: str, now: float) -> dict[str, float]:
        """What each quota counts for `principal` now (the submission quotas: tokens left)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcard(queued_jobs_key(principal))
        pipe.scard(running_jobs_key(principal))
        pipe.hmget(submit_bucket_key(principal), "tokens", "at")
        pipe.zcard(principal_sessions_key(principal))
        pipe.get(principal_artifact_bytes_key(principal))
        pipe.get(state_bytes_key(principal))
        pipe.zcount(principal_subscriptions_key(principal), now, "+inf")
        queued, running, bucket, sessions, artifact_bytes, state_bytes, subscriptions = pipe.execute()
        limits = self.limits(principal)
        tokens = limits["submission_burst"]
        if bucket[0] is not None:
            elapsed = max(0.0, now - float(bucket[1]))
            tokens = min(tokens, float(bucket[0]) + elapsed * limits["submissions_per_second"])
        return {
            "queued_jobs": queued,
            "running_jobs": running,
            "submission_tokens": round(tokens, 3),
            "sessions": sessions,
            "artifact_bytes": int(artifact_bytes or 0),
            "state_bytes": int(state_bytes or 0),
            "subscriptions": subscriptions,
        }
