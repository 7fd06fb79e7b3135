"""The exact ways a job can end. Every finished job has exactly one."""

from __future__ import annotations

import enum

from scriptpool.v1 import jobs_pb2


class Outcome(enum.StrEnum):
    OK = "ok"
    SCRIPT_ERROR = "script_error"
    CPU_TIME_EXCEEDED = "cpu_time_exceeded"
    WALL_TIME_EXCEEDED = "wall_time_exceeded"
    MEMORY_EXCEEDED = "memory_exceeded"
    OUTPUT_EXCEEDED = "output_exceeded"
    CALL_LIMIT_EXCEEDED = "call_limit_exceeded"
    SANDBOX_VIOLATION = "sandbox_violation"
    CANCELLED = "cancelled"
    WORKER_LOST = "worker_lost"
    INTERNAL_ERROR = "internal_error"

    def to_proto(self) -> jobs_pb2.Outcome.ValueType:
        return _TO_PROTO[self]

    @classmethod
    def from_proto(cls, value: int) -> Outcome:
        """The outcome a wire value names (unspecified: an internal error; a value this build does
        not know: protobuf's ValueError)."""
        found = _FROM_PROTO.get(value)
        if found is None:
            jobs_pb2.Outcome.Name(value)  # type: ignore[arg-type]  # raises for an unknown value
            return cls.INTERNAL_ERROR
        return found


_TO_PROTO = {outcome: jobs_pb2.Outcome.Value("OUTCOME_" + outcome.name) for outcome in Outcome}
_FROM_PROTO: dict[int, Outcome] = {value: outcome for outcome, value in _TO_PROTO.items()}
"""Wire value <-> outcome, looked up per job (protobuf's Name()/Value() cost microseconds each)."""
