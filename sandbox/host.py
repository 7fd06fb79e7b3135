"""What a script's engine needs from the outside world: one way to make a global call and one place
to write output. In a worker these cross a socket to the parent; in tests they can be local."""

from __future__ import annotations

from typing import Protocol

from scriptpool.sandbox.errors import OutputExceeded
from scriptpool.values import PlainValue

HOST_FAULT = "the call failed in the host"
"""What a script is told when a global call fails on the host side for a reason that is not about
its arguments or its limits: the host exception's text, type and object never reach the script."""


class GlobalHost(Protocol):
    def call(self, op: str, args: list[PlainValue]) -> PlainValue:
        """Perform a global operation such as "Session.create". Raises a ScriptpoolError subclass."""
        ...


class OutputSink:
    """Collects print output up to a byte limit. The part that fits is always kept."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.bytes_written = 0
        self.truncated = False
        self._chunks: list[str] = []

    def write(self, text: str) -> None:
        data = text.encode("utf-8", "replace")
        if not text.isascii():
            text = data.decode("utf-8")  # lone surrogates (not text) are shown as "?", as counted
        room = self.limit_bytes - self.bytes_written
        if len(data) > room:
            kept = data[: max(room, 0)].decode("utf-8", "ignore")
            if kept:
                self._emit(kept)
            self.bytes_written = self.limit_bytes
            self.truncated = True
            raise OutputExceeded(f"output passed the limit of {self.limit_bytes} bytes")
        self.bytes_written += len(data)
        self._emit(text)

    def _emit(self, text: str) -> None:
        self._chunks.append(text)

    def text(self) -> str:
        return "".join(self._chunks)
