"""A minimal RESP2 connection per thread for the Redis commands on the per-job and per-call hot paths.

Shared by the coordinator and the workers (so it lives in the core, beside `job_records.py`, which
neither side's code may import from the other's). redis-py spends ~70 µs of Python per command on this
machine (connection pool, retry and observability layers, RESP3 parsing) against ~15 µs for the
round trip itself. So the operations that run per job or per global call go through this module:
the `State.*` scripts (`LeanScript`, one `EVALSHA` each), `SubmitJob`'s transaction
(`transaction`), `WaitJob`'s read (`read`), and in a worker the job record's start/finish scripts
and RQ's dequeue and two per-job transactions (`workers/rq_compat/lean_rq.py`), and the coordinator's
job-finished subscription (`subscribe`). One connection per thread, blocking I/O; hiredis packs
the commands and parses the replies in C.

Semantics match redis-py's `Script`: NOSCRIPT is answered by loading the script and retrying;
a Redis error reply raises `redis.exceptions.ResponseError`; a broken connection raises
`redis.exceptions.ConnectionError` (after one retry on a fresh connection if the command could not
have been sent). Deployments redis-py connects to in ways this client does not speak (TLS,
RESP3-only servers, Cluster) run the same scripts through redis-py (`LeanScript.fallback`).

Behind Sentinel (a client `redis_urls.open_client` built for a `redis+sentinel://` URL) every new
connection asks the sentinels where the primary is (`SENTINEL get-master-addr-by-name`, the first
sentinel that answers wins) and checks with `ROLE` that the node it reached is a master; a node
that turned replica answers writes with READONLY, which drops the connection (the command did not
run) so the next one finds the new primary. A failover therefore costs the calls in flight a
`ConnectionError`, as a restart of a single server does, and nothing else.
"""

from __future__ import annotations

import hashlib
import socket
import threading
from collections.abc import Generator, Sequence
from typing import Any

import hiredis
from hiredis import pack_command as _hiredis_pack
from redis import Redis
from redis.connection import Connection, UnixDomainSocketConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.sentinel import SentinelConnectionPool, SentinelManagedConnection

from scriptpool.core.durability import ACK_REPLICAS_VARIABLE, NO_REPLICA_ACK, ReplicaAck
from scriptpool.core.redis_urls import sentinel_of
from scriptpool.errors import InvalidArgument

Reply = bytes | int | None | list["Reply"]
_RECV_BYTES = 256 * 1024
Arg = str | bytes | int | float


def _encode(arg: Arg) -> bytes:
    if isinstance(arg, bytes):
        return arg
    if isinstance(arg, str):
        return arg.encode()
    if isinstance(arg, bool):
        raise TypeError("booleans are not Redis arguments")
    return repr(arg).encode() if isinstance(arg, float) else str(arg).encode()


def pack_command(*args: Arg) -> bytes:
    """One command in RESP. hiredis packs it in C (a quarter of the time: packing was a fifth of
    the coordinator's CPU per submitted job); arguments it does not take are packed here."""
    try:
        return _hiredis_pack(args)  # type: ignore[arg-type, no-any-return]  # its stub types a 1-tuple
    except TypeError:
        return _pack_in_python(args)


def _pack_in_python(args: Sequence[Arg]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    append = parts.append
    for arg in args:  # the hot path of every lean command: exact types first, the rest via _encode
        if type(arg) is bytes:
            data = arg
        elif type(arg) is str:
            data = arg.encode()
        else:
            data = _encode(arg)
        append(b"$%d\r\n" % len(data))
        append(data)
        append(b"\r\n")
    return b"".join(parts)


class LeanConnection:
    """One blocking RESP2 connection (not thread-safe: one per thread)."""

    def __init__(self, kwargs: dict[str, Any], unix: bool) -> None:
        timeout = kwargs.get("socket_timeout")
        connect_timeout = kwargs.get("socket_connect_timeout") or timeout
        if unix:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                self.sock.settimeout(connect_timeout)
                self.sock.connect(kwargs["path"])
            except OSError:
                self.sock.close()
                raise
        else:
            address = (kwargs.get("host", "localhost"), int(kwargs.get("port", 6379)))
            self.sock = socket.create_connection(address, timeout=connect_timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(timeout)
        # hiredis parses replies in C (error replies come back as ResponseError, not raised).
        self.replies = hiredis.Reader(replyError=ResponseError)
        try:
            password, username = kwargs.get("password"), kwargs.get("username")
            if password:
                self.call(*(("AUTH", username, password) if username else ("AUTH", password)))
            if kwargs.get("db"):
                self.call("SELECT", int(kwargs["db"]))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self.sock.close()

    def call(self, *args: Arg) -> Reply:
        self.sock.sendall(pack_command(*args))
        return self._reply()

    def _reply(self) -> Reply:
        reply = self.read_reply()
        assert not isinstance(reply, ResponseError)  # raised at the top level
        return reply

    def read_reply(self, nested: bool = False) -> Reply | ResponseError:
        """One reply. An error reply raises, except with `nested` (a reply read as one of several,
        e.g. in a transaction), where it is returned as a `ResponseError` so the connection stays
        in step; an error inside an array is always returned as an element."""
        try:
            reply = self.replies.gets()
            while reply is False:  # not complete yet (RESP2 has no boolean replies)
                data = self.sock.recv(_RECV_BYTES)
                if not data:
                    raise RedisConnectionError("Redis closed the connection")
                self.replies.feed(data)
                reply = self.replies.gets()
        except hiredis.ProtocolError as exc:
            raise RedisConnectionError(f"unexpected reply from Redis: {exc}") from exc
        if isinstance(reply, ResponseError):
            message = str(reply)
            if message.startswith("NOSCRIPT"):
                reply = NoScriptError(message)
            elif message.startswith("READONLY"):  # a primary demoted under us: find the new one
                self.close()
                raise RedisConnectionError(f"the node is no longer the primary ({message})")
            if not nested:
                raise reply
        return reply  # type: ignore[no-any-return]


class SentinelLookup:
    """Where a Sentinel-managed primary is now, asked of the sentinels of a redis-py Sentinel pool."""

    def __init__(self, pool: SentinelConnectionPool) -> None:
        self.service = pool.service_name
        self.sentinels = [dict(s.connection_pool.connection_kwargs) for s in pool.sentinel_manager.sentinels]

    def primary(self, node_kwargs: dict[str, Any]) -> LeanConnection:
        """A connection to the primary (AUTH and SELECT done, ROLE checked); RedisConnectionError,
        naming each sentinel's answer, if none leads to a reachable master."""
        problems = []
        for sentinel in list(self.sentinels):
            try:
                address = self._ask(sentinel)
            except (OSError, RedisConnectionError, ResponseError) as exc:
                problems.append(f"sentinel {sentinel.get('host')}:{sentinel.get('port')}: {exc}")
                continue
            if address is None:
                problems.append(
                    f"sentinel {sentinel.get('host')}:{sentinel.get('port')} does not know {self.service!r}"
                )
                continue
            self.sentinels.remove(sentinel)  # ask the one that answered first next time
            self.sentinels.insert(0, sentinel)
            return master_at(address, node_kwargs)
        raise RedisConnectionError(f"no primary for {self.service!r} from the sentinels: {'; '.join(problems)}")

    def _ask(self, sentinel: dict[str, Any]) -> tuple[str, int] | None:
        conn = LeanConnection(sentinel, unix=False)
        try:
            reply = conn.call("SENTINEL", "get-master-addr-by-name", self.service)
        finally:
            conn.close()
        if not isinstance(reply, list) or len(reply) != 2:
            return None
        host, port = reply
        assert isinstance(host, bytes) and isinstance(port, bytes)
        return host.decode(), int(port)


def master_at(address: tuple[str, int], node_kwargs: dict[str, Any]) -> LeanConnection:
    """A connection to the node at `address`, refused (RedisConnectionError) unless it is a master."""
    host, port = address
    try:
        conn = LeanConnection({**node_kwargs, "host": host, "port": port}, unix=False)
    except OSError as exc:
        raise RedisConnectionError(f"cannot connect to the primary at {host}:{port}: {exc}") from exc
    try:
        role = conn.call("ROLE")
        if not isinstance(role, list) or not role or role[0] != b"master":
            kind = role[0].decode() if isinstance(role, list) and role and isinstance(role[0], bytes) else repr(role)
            raise RedisConnectionError(f"{host}:{port}, named primary by the sentinels, is a {kind} (failing over?)")
    except BaseException:
        conn.close()
        raise
    return conn


class LeanPool:
    """A LeanConnection per thread, for the Redis a redis-py client points at."""

    def __init__(self, redis: Redis, ack: ReplicaAck = NO_REPLICA_ACK) -> None:
        """`ack`: the replicas that must confirm the transactions sent with `acknowledge` (the
        writes that acknowledge a submission or a result)."""
        pool = redis.connection_pool
        self._kwargs = {k: v for k, v in pool.connection_kwargs.items() if k != "connection_pool"}
        self._unix = pool.connection_class is UnixDomainSocketConnection
        sentinel = sentinel_of(redis)
        self._sentinel = None if sentinel is None else SentinelLookup(sentinel)
        # Plain TCP, Unix sockets or plain TCP through Sentinel only; anything else (TLS, custom
        # classes) goes through redis-py.
        self.supported = self._unix or pool.connection_class in (Connection, SentinelManagedConnection)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: set[LeanConnection] = set()
        self.ack = NO_REPLICA_ACK
        self.acknowledge_with(ack)

    def acknowledge_with(self, ack: ReplicaAck) -> None:
        """Send `ack`'s WAIT after the acknowledging transactions; InvalidArgument where this client
        cannot (TLS: the WAIT must follow the write on the write's own connection)."""
        if ack.replicas and not self.supported:
            raise InvalidArgument(
                f"{ACK_REPLICAS_VARIABLE} needs a redis://, unix:// or redis+sentinel:// URL (not TLS)"
            )
        self.ack = ack

    def _new(self) -> LeanConnection:
        if self._sentinel is not None:
            return self._sentinel.primary(self._kwargs)
        return LeanConnection(self._kwargs, self._unix)

    def dedicated(self) -> LeanConnection:
        """A connection of the caller's own, outside the per-thread ones (a subscriber's); the caller
        closes it."""
        try:
            return self._new()
        except OSError as exc:
            raise RedisConnectionError(f"cannot connect to Redis: {exc}") from exc

    def connection(self) -> LeanConnection:
        conn: LeanConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._new()
            self._local.conn = conn
            with self._lock:
                self._open.add(conn)
        return conn

    def send(self, payload: bytes) -> LeanConnection:
        """Write `payload` on the calling thread's connection. A connection Redis had closed fails the
        write (so nothing was sent) and is replaced once; the caller then reads the replies."""
        for attempt in (1, 2):
            try:
                conn = self.connection()
            except OSError as exc:
                raise RedisConnectionError(f"cannot connect to Redis: {exc}") from exc
            try:
                conn.sock.sendall(payload)
                return conn
            except OSError as exc:
                self.discard()
                if attempt == 2:
                    raise RedisConnectionError(f"lost the connection to Redis: {exc}") from exc
        raise AssertionError("unreachable")

    def lost(self, exc: BaseException, during: str) -> RedisConnectionError:
        """The connection broke while replies were read: drop it (whatever was sent may have run)."""
        self.discard()
        return RedisConnectionError(f"lost the connection to Redis mid-{during}: {exc}")

    def discard(self) -> None:
        conn: LeanConnection | None = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with self._lock:
                self._open.discard(conn)
            conn.close()

    def close(self) -> None:
        """Close every thread's connection (at shutdown; a later call opens a new one)."""
        with self._lock:
            conns, self._open = self._open, set()
        for conn in conns:
            conn.close()
        self._local = threading.local()


class LeanScript:
    """A Lua script called with EVALSHA over the calling thread's lean connection."""

    def __init__(self, redis: Redis, pool: LeanPool, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        self.pool = pool
        self.fallback = redis.register_script(source)

    def __call__(self, keys: Sequence[Arg], args: Sequence[Arg]) -> Reply:
        if not self.pool.supported:
            reply: Reply = self.fallback(keys=[_encode(k) for k in keys], args=[_encode(a) for a in args])
            return reply
        command = ("EVALSHA", self.sha, len(keys), *keys, *args)
        conn = self.pool.send(pack_command(*command))
        try:
            return conn._reply()
        except NoScriptError:
            conn.call("SCRIPT", "LOAD", self.source)
            return conn.call(*command)
        except ResponseError:
            raise
        except (OSError, RedisConnectionError) as exc:
            raise self.pool.lost(exc, "command") from exc  # never resend: it may have run


def is_transient_reply(error: ResponseError) -> bool:
    """An error reply that says "not now" rather than "wrong": Redis loading its data after a restart
    (`LOADING`), or busy running a script (`BUSY`). Sending the same command later will do."""
    return str(error).startswith(("LOADING", "BUSY "))


def _wait_command(pool: LeanPool, acknowledge: str) -> tuple[tuple[Arg, ...], ...]:
    return (pool.ack.command(),) if acknowledge and pool.ack.replicas else ()


def _check_wait(pool: LeanPool, acknowledge: str, waited: list[Reply | ResponseError], replies: list[Reply]) -> None:
    """With `acknowledge`, the WAIT sent after the transaction must have reached `pool.ack.replicas`
    (ReplicasBehind otherwise, carrying the transaction's `replies`)."""
    if waited:
        if isinstance(waited[0], ResponseError):
            raise waited[0]
        pool.ack.check(waited[0], list(replies), acknowledge)


def transaction(pool: LeanPool, commands: Sequence[Sequence[Arg]], *, acknowledge: str = "") -> list[Reply]:
    """MULTI, `commands`, EXEC in one write on the calling thread's lean connection; the EXEC replies.
    Any command's error raises (after the whole reply was read). The caller checks `pool.supported`.
    `acknowledge` names what the transaction acknowledges (e.g. "the submission"): with `pool.ack`
    asking for replicas, a WAIT follows in the same write, and too few confirmations raise
    `ReplicasBehind` (an Unavailable) after the transaction ran."""
    wait = _wait_command(pool, acknowledge)
    payload = b"".join(pack_command(*command) for command in (("MULTI",), *commands, ("EXEC",), *wait))
    conn = pool.send(payload)
    try:
        queued = [conn.read_reply(nested=True) for _ in range(len(commands) + 1)]  # +OK, +QUEUED...
        result = conn.read_reply(nested=True)
        waited = [conn.read_reply(nested=True) for _ in wait]
    except (OSError, RedisConnectionError) as exc:
        raise pool.lost(exc, "transaction") from exc  # never resend: it may have run
    for reply in (*queued, result):
        if isinstance(reply, ResponseError):
            raise reply
    if not isinstance(result, list):
        raise ResponseError("the transaction was not executed")
    for reply in result:
        if isinstance(reply, ResponseError):
            raise reply
    _check_wait(pool, acknowledge, waited, result)
    return result


def watched_transaction(
    pool: LeanPool, key: Arg, before: Sequence[Arg], commands: Sequence[Sequence[Arg]], *, acknowledge: str = ""
) -> list[Reply] | None:
    """WATCH `key`, the command `before`, then MULTI, `commands`, EXEC, all in one write on the
    calling thread's lean connection: the EXEC replies, or None if `key` was modified after the
    WATCH (by `before` itself, which is how a script there can veto the transaction, or by another
    client) and nothing of the transaction ran. Errors and `acknowledge` as for `transaction` (the
    WAIT is checked either way: it also covers what `before` wrote)."""
    wait = _wait_command(pool, acknowledge)
    sent = (("WATCH", key), before, ("MULTI",), *commands, ("EXEC",))
    conn = pool.send(b"".join(pack_command(*command) for command in (*sent, *wait)))
    try:
        replies = [conn.read_reply(nested=True) for _ in range(len(sent))]
        waited = [conn.read_reply(nested=True) for _ in wait]
    except (OSError, RedisConnectionError) as exc:
        raise pool.lost(exc, "transaction") from exc  # never resend: it may have run
    *first, result = replies
    for reply in first:
        if isinstance(reply, ResponseError):
            raise reply
    _check_wait(pool, acknowledge, waited, result if isinstance(result, list) else [])
    if result is None:
        return None
    assert isinstance(result, list)
    for reply in result:
        if isinstance(reply, ResponseError):
            raise reply
    return result


def read(pool: LeanPool, *command: Arg) -> Reply:
    """A read-only command on the calling thread's lean connection (retried once on a fresh
    connection whatever failed: reading twice is harmless). The caller checks `pool.supported`."""
    try:
        return pool.send(pack_command(*command))._reply()
    except (OSError, RedisConnectionError) as exc:
        pool.discard()
        first = exc
    try:
        return pool.send(pack_command(*command))._reply()
    except (OSError, RedisConnectionError) as exc:
        raise pool.lost(exc, "read") from first


def read_many(pool: LeanPool, redis: Redis, commands: Sequence[Sequence[Arg]]) -> list[Reply]:
    """Read-only commands in one round trip: pipelined on the calling thread's lean connection
    (retried once on a fresh connection, like `read`), or through a redis-py pipeline where the lean
    connection does not apply. Any command's error reply raises, after all replies were read."""
    if not pool.supported:
        pipe = redis.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)  # type: ignore[no-untyped-call]
        return list(pipe.execute())
    payload = b"".join(pack_command(*command) for command in commands)
    replies: list[Reply | ResponseError] = []
    for attempt in (1, 2):
        try:
            conn = pool.send(payload)
            replies = [conn.read_reply(nested=True) for _ in commands]
            break
        except (OSError, RedisConnectionError) as exc:
            if attempt == 2:
                raise pool.lost(exc, "read") from exc
            pool.discard()
    for reply in replies:
        if isinstance(reply, ResponseError):
            raise reply
    return replies  # type: ignore[return-value]  # (no ResponseError left)


def subscribe(pool: LeanPool, channel: str, poll_seconds: float) -> Generator[bytes | None, None, None]:
    """Messages published on `channel`, over a connection of their own: yields b"" once subscribed,
    each message's data, and None after `poll_seconds` without one (so the caller can check
    whether to stop). Closing the generator closes the connection; a lost connection raises
    redis-py's ConnectionError."""
    conn = pool.dedicated()
    try:
        conn.sock.sendall(pack_command("SUBSCRIBE", channel))
        conn.sock.settimeout(poll_seconds)
        while True:
            try:
                reply = conn.read_reply()
            except TimeoutError:  # nothing arrived: what was read so far stays in the reader
                yield None
                continue
            except OSError as exc:
                raise RedisConnectionError(f"lost the subscription to {channel}: {exc}") from exc
            assert isinstance(reply, list) and reply and isinstance(reply[0], bytes)
            if reply[0] == b"message":
                data = reply[2]
                assert isinstance(data, bytes)
                yield data
            elif reply[0] == b"subscribe":
                yield b""
    finally:
        conn.close()
