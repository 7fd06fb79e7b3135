"""Who is a principal: a name with at least one API key that is not revoked.

`principal_known` answers it for features that name another principal (sharing grants), so that
a grant to a typo or to a principal whose keys were all revoked can be refused.
"""

from __future__ import annotations

from redis import Redis

from scriptpool.coordinator.stores.api_keys import ApiKeyStore, check_principal


def principal_known(redis: Redis, principal: str) -> bool:
    """True when `principal` has at least one key that is not revoked (an expired one counts until
    its record is gone: the principal still exists; a key of an earlier version counts once it has
    been used with this version). A malformed name is InvalidArgument."""
    check_principal(principal)
    return ApiKeyStore(redis).principal_has_key(principal)


__all__ = ["principal_known"]
