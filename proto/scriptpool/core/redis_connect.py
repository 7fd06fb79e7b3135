"""Open the Redis a process is told to use, and fail at start-up in one line a person can act on.

`connect(url)` builds the client (`redis_urls.open_client`: a plain server or a primary found through
Sentinel), pings the server once and checks its version: scriptpool needs Redis
>= 7.0 (`MIN_REDIS_VERSION`: SINTERCARD in artifact queries, and the Redis 7 behaviour of the record
scripts); an older server is `FailedPrecondition` naming both versions. A URL redis-py cannot parse,
or a server that refuses the credentials, raises `InvalidArgument`; a server that cannot be reached
(refused, unknown host, timeout, still loading) raises `Unavailable`. Both messages name the URL
without its password (`redacted`) and the cause, so `scriptpool coordinator`, `scriptpool worker`,
`up` and `apikey` print one line (`coordinator/cli/main.py` maps the codes to exit codes), never a
traceback. Shared by the coordinator and the workers (the workers never import the coordinator).
"""

from __future__ import annotations

from redis import Redis
from redis.exceptions import AuthenticationError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.sentinel import MasterNotFoundError

from scriptpool.core.redis_urls import open_client, redacted, sentinel_of
from scriptpool.errors import FailedPrecondition, InvalidArgument, ScriptpoolError, Unavailable

MIN_REDIS_VERSION = (7, 0)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def version_tuple(text: str) -> tuple[int, ...]:
    """`7.0.15` -> (7, 0, 15); anything unreadable -> (0,)."""
    parts = []
    for part in text.strip().split("."):
        if not part.isdigit():
            break
        parts.append(int(part))
    return tuple(parts) or (0,)


def check_version(redis: Redis, url: str) -> None:
    """Refuse a server older than `MIN_REDIS_VERSION`, in one line."""
    version = str(redis.info("server").get("redis_version", "0"))
    if version_tuple(version) < MIN_REDIS_VERSION:
        needed = ".".join(map(str, MIN_REDIS_VERSION))
        raise FailedPrecondition(
            f"Redis at {redacted(url)!r} is version {version}; scriptpool needs Redis {needed} or newer"
        )


def connect(url: str, *, protocol: int | None = 2) -> Redis:
    """A client for `url` whose server answered PING. RESP2 by default: redis-py parses it in half
    the time of RESP3 (None: redis-py's default)."""
    redis = open_client(url, protocol=protocol)  # InvalidArgument if it does not parse
    try:
        redis.ping()
        check_version(redis, url)
    except FailedPrecondition:
        redis.close()
        raise
    except MasterNotFoundError as exc:  # (redis-py's message holds a repr of every sentinel client)
        problem = _sentinels_problem(redis, url)
        redis.close()
        raise problem from exc
    except (AuthenticationError, ResponseError) as exc:  # wrong password, or not allowed to PING
        redis.close()
        raise InvalidArgument(f"Redis at {redacted(url)!r} refused the connection: {_one_line(exc)}") from exc
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        redis.close()
        raise Unavailable(f"cannot reach Redis at {redacted(url)!r}: {_one_line(exc)}") from exc
    except RedisError as exc:  # e.g. a server that does not speak Redis
        redis.close()
        raise Unavailable(f"cannot use Redis at {redacted(url)!r}: {_one_line(exc)}") from exc
    return redis


def _sentinels_problem(redis: Redis, url: str) -> ScriptpoolError:
    """Why no sentinel of `redis`'s Sentinel pool named a primary, one clause per sentinel:
    InvalidArgument if one refused the credentials (`sentinel_password`), else Unavailable."""
    pool = sentinel_of(redis)
    assert pool is not None
    problems, refused = [], False
    for sentinel in pool.sentinel_manager.sentinels:
        kwargs = sentinel.connection_pool.connection_kwargs
        name = f"sentinel {kwargs.get('host')}:{kwargs.get('port')}"
        try:
            masters = sentinel.sentinel_masters()
        except (AuthenticationError, ResponseError) as exc:
            refused = True
            problems.append(f"{name} refused the connection ({_one_line(exc)})")
        except (RedisError, OSError) as exc:
            problems.append(f"{name}: {_one_line(exc)}")
        else:
            known = pool.service_name in masters
            problems.append(f"{name} {'says the primary is down' if known else 'monitors no'} {pool.service_name!r}")
        finally:
            sentinel.close()
    if refused:
        return InvalidArgument(f"Redis Sentinel at {redacted(url)!r} refused the connection: {'; '.join(problems)}")
    return Unavailable(f"cannot reach Redis at {redacted(url)!r}: no primary from the sentinels: {'; '.join(problems)}")


__all__ = ["MIN_REDIS_VERSION", "check_version", "connect", "redacted", "version_tuple"]
