"""The zygote's control messages: fixed-size records on a SOCK_SEQPACKET socket.

worker -> zygote: `SPAWN` (value = bit mask of the languages the spare warms up).
zygote -> worker: `CHILD` (pid; the child's socket and a pidfd ride along as SCM_RIGHTS), `FAILED`
(value = errno of a failed fork) and `EXITED` (pid, wait status and rusage of every child it reaps).
Messages on the socket keep their order, so an `EXITED` for a pid always arrives before a `CHILD`
that reuses the pid.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from scriptpool.languages import Language

SPAWN = b"SPWN"
CHILD = b"CHLD"
FAILED = b"FAIL"
EXITED = b"EXIT"
KINDS = (SPAWN, CHILD, FAILED, EXITED)

_RECORD = struct.Struct("<4siiqqq")
SIZE = _RECORD.size
_ORDER = tuple(Language)


@dataclass(frozen=True, slots=True)
class Message:
    kind: bytes
    pid: int = 0
    value: int = 0
    """SPAWN: language mask; FAILED: errno; EXITED: wait status."""
    utime_us: int = 0
    stime_us: int = 0
    maxrss_kb: int = 0

    def pack(self) -> bytes:
        return _RECORD.pack(self.kind, self.pid, self.value, self.utime_us, self.stime_us, self.maxrss_kb)

    @classmethod
    def unpack(cls, data: bytes) -> Message:
        if len(data) != SIZE:
            raise ValueError(f"zygote message of {len(data)} bytes, expected {SIZE}")
        kind, pid, value, utime_us, stime_us, maxrss_kb = _RECORD.unpack(data)
        if kind not in KINDS:
            raise ValueError(f"unknown zygote message {kind!r}")
        return cls(kind, pid, value, utime_us, stime_us, maxrss_kb)


def languages_mask(languages: tuple[Language, ...]) -> int:
    return sum(1 << _ORDER.index(language) for language in set(languages))


def languages_from_mask(mask: int) -> tuple[Language, ...]:
    return tuple(language for index, language in enumerate(_ORDER) if mask & (1 << index))
