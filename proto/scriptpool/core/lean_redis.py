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
RESP3-only servers, Sentinel/Cluster) run the same scripts through redis-py (`LeanScript.fallback`).
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
            if not nested:
                raise reply
        return reply  # type: ignore[no-any-return]


class LeanPool:
    """A LeanConnection per thread, for the Redis a redis-py client points at."""

    def __init__(self, redis: Redis) -> None:
        pool = redis.connection_pool
        self._kwargs = dict(pool.connection_kwargs)
        self._unix = pool.connection_class is UnixDomainSocketConnection
        # Plain TCP or Unix sockets only; anything else (TLS, custom classes) goes through redis-py.
        self.supported = self._unix or pool.connection_class is Connection
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: set[LeanConnection] = set()

    def dedicated(self) -> LeanConnection:
        """A connection of the caller's own, outside the per-thread ones (a subscriber's); the caller
        closes it."""
        try:
            return LeanConnection(self._kwargs, self._unix)
        except OSError as exc:
            raise RedisConnectionError(f"cannot connect to Redis: {exc}") from exc

    def connection(self) -> LeanConnection:
        conn: LeanConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = LeanConnection(self._kwargs, self._unix)
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


def transaction(pool: LeanPool, commands: Sequence[Sequence[Arg]]) -> list[Reply]:
    """MULTI, `commands`, EXEC in one write on the calling thread's lean connection; the EXEC replies.
    Any command's error raises (after the whole reply was read). The caller checks `pool.supported`."""
    payload = b"".join(pack_command(*command) for command in (("MULTI",), *commands, ("EXEC",)))
    conn = pool.send(payload)
    try:
        queued = [conn.read_reply(nested=True) for _ in range(len(commands) + 1)]  # +OK, +QUEUED...
        result = conn.read_reply(nested=True)
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
    return result


def watched_transaction(
    pool: LeanPool, key: Arg, before: Sequence[Arg], commands: Sequence[Sequence[Arg]]
) -> list[Reply] | None:
    """WATCH `key`, the command `before`, then MULTI, `commands`, EXEC, all in one write on the
    calling thread's lean connection: the EXEC replies, or None if `key` was modified after the
    WATCH (by `before` itself, which is how a script there can veto the transaction, or by another
    client) and nothing of the transaction ran. Errors as for `transaction`."""
    sent = (("WATCH", key), before, ("MULTI",), *commands, ("EXEC",))
    conn = pool.send(b"".join(pack_command(*command) for command in sent))
    try:
        replies = [conn.read_reply(nested=True) for _ in range(len(sent))]
    except (OSError, RedisConnectionError) as exc:
        raise pool.lost(exc, "transaction") from exc  # never resend: it may have run
    *first, result = replies
    for reply in first:
        if isinstance(reply, ResponseError):
            raise reply
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
