"""Open the Redis a process is told to use, and fail at start-up in one line a person can act on.

`connect(url)` parses the URL, pings the server once and checks its version: scriptpool needs Redis
>= 7.0 (`MIN_REDIS_VERSION`: SINTERCARD in artifact queries, and the Redis 7 behaviour of the record
scripts); an older server is `FailedPrecondition` naming both versions. A URL redis-py cannot parse,
or a server that refuses the credentials, raises `InvalidArgument`; a server that cannot be reached
(refused, unknown host, timeout, still loading) raises `Unavailable`. Both messages name the URL
without its password (`redacted`) and the cause, so `scriptpool coordinator`, `scriptpool worker`,
`up` and `apikey` print one line (`coordinator/cli/main.py` maps the codes to exit codes), never a
traceback. Shared by the coordinator and the workers (the workers never import the coordinator).
"""

from __future__ import annotations

import re

from redis import Redis
from redis.exceptions import AuthenticationError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from scriptpool.errors import FailedPrecondition, InvalidArgument, Unavailable

MIN_REDIS_VERSION = (7, 0)

_USERINFO_PASSWORD = re.compile(r"^(?P<scheme>[^:/]*://)(?P<user>[^:@/]*):[^@/]*@")
_QUERY_PASSWORD = re.compile(r"(?P<key>[?&]password=)[^&]*", re.IGNORECASE)


def redacted(url: str) -> str:
    """`url` with any password (`redis://user:PASSWORD@host`, `?password=`) replaced by `***`."""
    url = _USERINFO_PASSWORD.sub(r"\g<scheme>\g<user>:***@", url)
    return _QUERY_PASSWORD.sub(r"\g<key>***", url)


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
    if not url:
        raise InvalidArgument("no Redis URL: set REDIS_URL or pass --redis-url")
    try:
        redis = Redis.from_url(url, protocol=protocol)
    except (ValueError, RedisError) as exc:
        raise InvalidArgument(f"bad Redis URL {redacted(url)!r}: {_one_line(exc)}") from exc
    try:
        redis.ping()
        check_version(redis, url)
    except FailedPrecondition:
        redis.close()
        raise
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
