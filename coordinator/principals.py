"""Which principals exist: the ones a grant may name (issue 18 item 5).

A principal exists for the coordinator once an API key was made for it (`scriptpool apikey create`)
or, for keys made before this set existed, once such a key authenticated: `coordinator/auth.py`
adds it to `sp:principals` then. The check is one SISMEMBER, never a scan of the key space.
Revoking keys does not remove a principal (grants it holds stay meaningful to the owner, who may
revoke them).
"""

from __future__ import annotations

from redis import Redis
from redis.client import Pipeline

from scriptpool.core.keys import PRINCIPALS_KEY


def principal_known(redis: Redis, principal: str) -> bool:
    """Whether `principal` has (or had) an API key: one a grant may name."""
    return bool(redis.sismember(PRINCIPALS_KEY, principal))


def remember_principal(target: Redis | Pipeline, principal: str) -> None:
    """Record that `principal` exists (an API key was made for it, or authenticated)."""
    target.sadd(PRINCIPALS_KEY, principal)
