"""Redis URLs, and the one place that turns them into connections.

Every process (coordinator, workers, CLI, bench) opens Redis through `open_client`, so a plain
server and a Sentinel-managed one are reached the same way everywhere; the lean RESP client
(`lean_redis.LeanPool`) takes what it needs from the client this module built (`sentinel_of`).
Nothing else parses a Redis URL.

Accepted URLs:

  redis://[[username]:password@]host[:port][/db]     a single server (redis-py's grammar, also
  rediss://...   unix://[[username]:password@]/path[?db=N]   `?password=`, TLS, Unix sockets)

  redis+sentinel://[[username]:password@]host[:port][,host[:port]...]/service[/db][?query]
      A primary found through Sentinel: `host:port` are the sentinels (port 26379 unless given),
      `service` is the name the sentinels monitor (`sentinel monitor <service> ...`), `db` the
      database (0 unless given). The user and password in front are the data nodes' (the primary's
      and its replicas'), as in a redis:// URL. The query may hold, each at most once:
        sentinel_username=U, sentinel_password=P   the sentinels' own credentials (`requirepass` in
                                                   sentinel.conf); none unless given
        sentinel_timeout=SECONDS                   how long a sentinel may take to answer (default 1)
      Percent-escapes (%40 for @, %2C for a comma) are decoded in names and passwords.

A URL that does not parse is `InvalidArgument` naming it without its passwords (`redacted`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote

from redis import ConnectionPool, Redis
from redis.exceptions import RedisError
from redis.sentinel import Sentinel, SentinelConnectionPool

from scriptpool.errors import InvalidArgument

SENTINEL_SCHEME = "redis+sentinel"
DEFAULT_SENTINEL_PORT = 26379
DEFAULT_SENTINEL_TIMEOUT_SECONDS = 1.0
"""How long one sentinel may take to answer a lookup before the next one is asked."""

_USERINFO_PASSWORD = re.compile(r"^(?P<scheme>[^:/]*://)(?P<user>[^:@/]*):[^@/]*@")
_QUERY_PASSWORD = re.compile(r"(?P<key>[?&](?:sentinel_)?password=)[^&]*", re.IGNORECASE)
_SENTINEL_URL = re.compile(
    r"^redis\+sentinel://(?:(?P<user>[^:@/]*)(?::(?P<password>[^@/]*))?@)?"
    r"(?P<hosts>[^/?#@]+)/(?P<service>[^/?#]+)(?:/(?P<db>[^/?#]*))?/?(?:\?(?P<query>[^#]*))?$"
)
_QUERY_KEYS = ("sentinel_username", "sentinel_password", "sentinel_timeout")


def redacted(url: str) -> str:
    """`url` with any password (`redis://user:PASSWORD@host`, `?password=`, `?sentinel_password=`)
    replaced by `***`."""
    url = _USERINFO_PASSWORD.sub(r"\g<scheme>\g<user>:***@", url)
    return _QUERY_PASSWORD.sub(r"\g<key>***", url)


@dataclass(frozen=True, kw_only=True)
class SentinelTarget:
    """A primary reached through Sentinel, as a `redis+sentinel://` URL names it."""

    sentinels: tuple[tuple[str, int], ...]
    """The sentinels' (host, port), asked in this order."""
    service: str
    """The monitored master's name (`SENTINEL get-master-addr-by-name <service>`)."""
    db: int = 0
    """The database on the primary."""
    username: str | None = None
    """The data nodes' ACL user (None: `default`)."""
    password: str | None = None
    """The data nodes' password (None: no AUTH)."""
    sentinel_username: str | None = None
    """The sentinels' ACL user."""
    sentinel_password: str | None = None
    """The sentinels' password (their `requirepass`)."""
    sentinel_timeout: float = DEFAULT_SENTINEL_TIMEOUT_SECONDS
    """Seconds a sentinel may take to connect and answer."""


def is_sentinel_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() == SENTINEL_SCHEME


def parse_sentinel_url(url: str) -> SentinelTarget:
    """The target a `redis+sentinel://` URL names; InvalidArgument (one line) if it does not parse."""
    match = _SENTINEL_URL.match(url.strip())
    if match is None:
        raise _bad(url, "expected redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]")
    sentinels = tuple(_host_port(url, part) for part in match["hosts"].split(","))
    db_text = match["db"] or "0"
    if not db_text.isdigit():
        raise _bad(url, f"the database must be a number (got {unquote(db_text)!r})")
    query = _query(url, match["query"] or "")
    timeout_text = query.get("sentinel_timeout", str(DEFAULT_SENTINEL_TIMEOUT_SECONDS))
    try:
        timeout = float(timeout_text)
    except ValueError:
        timeout = 0.0
    if not 0 < timeout <= 60:
        raise _bad(url, f"sentinel_timeout must be seconds in (0, 60] (got {timeout_text!r})")
    return SentinelTarget(
        sentinels=sentinels,
        service=unquote(match["service"]),
        db=int(db_text),
        username=unquote(match["user"] or "") or None,
        password=unquote(match["password"]) if match["password"] is not None else None,
        sentinel_username=query.get("sentinel_username"),
        sentinel_password=query.get("sentinel_password"),
        sentinel_timeout=timeout,
    )


def _bad(url: str, why: str) -> InvalidArgument:
    return InvalidArgument(f"bad Redis URL {redacted(url)!r}: {why}")


def _host_port(url: str, part: str) -> tuple[str, int]:
    text = part.strip()
    if text.startswith("["):  # [IPv6]:port
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = text.rpartition(":") if ":" in text else (text, "", "")
    if not host:
        raise _bad(url, f"a sentinel address has no host ({part!r})")
    if not port_text:
        return unquote(host), DEFAULT_SENTINEL_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise _bad(url, f"a sentinel port must be 1-65535 (got {port_text!r})")
    return unquote(host), int(port_text)


def _query(url: str, text: str) -> dict[str, str]:
    try:
        parsed = parse_qs(text, keep_blank_values=True, strict_parsing=bool(text))
    except ValueError as exc:
        raise _bad(url, f"unreadable query ({exc})") from exc
    for key, values in parsed.items():
        if key not in _QUERY_KEYS:
            raise _bad(url, f"unknown parameter {key!r} (known: {', '.join(_QUERY_KEYS)})")
        if len(values) > 1:
            raise _bad(url, f"parameter {key!r} given more than once")
    return {key: values[0] for key, values in parsed.items()}


def open_client(url: str, *, protocol: int | None = 2) -> Redis:
    """A redis-py client for `url` (not yet connected). With Sentinel, its connections ask the
    sentinels for the primary whenever they (re)connect, and drop a node that turned replica (its
    READONLY reply), so the client follows a failover. InvalidArgument if `url` does not parse."""
    if not url:
        raise InvalidArgument("no Redis URL: set REDIS_URL or pass --redis-url")
    if is_sentinel_url(url):
        return sentinel_client(parse_sentinel_url(url), protocol=protocol)
    try:
        return Redis.from_url(url, protocol=protocol)
    except (ValueError, RedisError) as exc:
        raise _bad(url, " ".join(str(exc).split()) or type(exc).__name__) from exc


def sentinel_client(target: SentinelTarget, *, protocol: int | None = 2) -> Redis:
    sentinel_kwargs = {
        "username": target.sentinel_username,
        "password": target.sentinel_password,
        "socket_timeout": target.sentinel_timeout,
        "socket_connect_timeout": target.sentinel_timeout,
    }
    manager = Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]
    primary: Redis = manager.master_for(  # type: ignore[no-untyped-call]
        target.service, db=target.db, username=target.username, password=target.password, protocol=protocol
    )
    return primary


def sentinel_of(redis: Redis) -> SentinelConnectionPool | None:
    """The Sentinel pool behind a client `open_client` built for a `redis+sentinel://` URL (None for a
    plain server)."""
    pool = redis.connection_pool
    return pool if isinstance(pool, SentinelConnectionPool) else None


def sibling_client(redis: Redis, **overrides: object) -> Redis:
    """A new client on the same target as `redis` (following the same sentinels), with one connection
    of its own and `overrides` of their settings (e.g. a shorter `socket_timeout`)."""
    pool = redis.connection_pool
    kwargs = {k: v for k, v in pool.connection_kwargs.items() if k != "connection_pool"}
    kwargs.update(overrides)
    sentinel = sentinel_of(redis)
    if sentinel is not None:
        return Redis(
            connection_pool=SentinelConnectionPool(  # type: ignore[no-untyped-call]
                sentinel.service_name,
                sentinel.sentinel_manager,
                connection_class=pool.connection_class,
                max_connections=1,
                **kwargs,
            )
        )
    return Redis(connection_pool=ConnectionPool(connection_class=pool.connection_class, max_connections=1, **kwargs))


__all__ = [
    "DEFAULT_SENTINEL_PORT",
    "SentinelTarget",
    "is_sentinel_url",
    "open_client",
    "parse_sentinel_url",
    "redacted",
    "sentinel_client",
    "sentinel_of",
    "sibling_client",
]
