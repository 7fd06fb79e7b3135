"""Length-prefixed protobuf frames over the worker <-> child socketpair.

A 4-byte big-endian length, then the message. The worker reads with `FrameReader` (non-blocking,
so a child that sends half a frame and spins cannot stall its supervisor); the child, which has
nothing else to do, uses the blocking helpers.
"""

from __future__ import annotations

import socket
import struct
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from scriptpool.errors import Internal

HEADER = struct.Struct(">I")
MAX_FRAME_BYTES = 256 * 1024 * 1024

M = TypeVar("M", bound=Message)


class FrameError(Internal):
    """The peer sent something that is not a well-formed frame."""


def encode(message: Message) -> bytes:
    body = message.SerializeToString()
    return HEADER.pack(len(body)) + body


def send(sock: socket.socket, message: Message) -> None:
    sock.sendall(encode(message))


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(min(size - len(chunks), 1 << 20))
        if not chunk:
            raise EOFError("peer closed the socket")
        chunks += chunk
    return bytes(chunks)


def recv(sock: socket.socket, message_type: type[M]) -> M:
    (size,) = HEADER.unpack(_recv_exact(sock, HEADER.size))
    if size > MAX_FRAME_BYTES:
        raise FrameError(f"frame of {size} bytes is larger than {MAX_FRAME_BYTES}")
    return _parse(message_type, _recv_exact(sock, size))


def _parse(message_type: type[M], body: bytes) -> M:
    message = message_type()
    try:
        message.ParseFromString(body)
    except DecodeError as exc:
        raise FrameError(f"malformed {message_type.__name__} frame") from exc
    return message


READ_CHUNK_BYTES = 64 * 1024
"""Bytes asked per read: a larger request costs an allocation of that size on every read (most
frames are a few dozen bytes); big frames simply take several reads."""


class FrameReader:
    """Accumulates bytes from a non-blocking socket and yields whole frames."""

    def __init__(self, message_type: type[M], max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self._type = message_type
        self._max = max_frame_bytes
        self._buffer = bytearray()
        self.closed = False

    def feed_from(self, sock: socket.socket) -> list[Message]:
        """Read what is available; return the complete frames. Sets `closed` at EOF."""
        try:
            chunk = sock.recv(READ_CHUNK_BYTES)
        except BlockingIOError:
            chunk = None
        except ConnectionResetError:
            chunk = b""
        if chunk == b"":
            self.closed = True
        elif chunk:
            self._buffer += chunk
        frames: list[Message] = []
        while len(self._buffer) >= HEADER.size:
            (size,) = HEADER.unpack_from(self._buffer)
            if size > self._max:
                raise FrameError(f"frame of {size} bytes is larger than {self._max}")
            if len(self._buffer) < HEADER.size + size:
                break
            body = bytes(self._buffer[HEADER.size : HEADER.size + size])
            del self._buffer[: HEADER.size + size]
            frames.append(_parse(self._type, body))
        return frames
