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
        return jobs_pb2.Outcome.Value("OUTCOME_" + self.name)

    @classmethod
    def from_proto(cls, value: int) -> Outcome:
        name = jobs_pb2.Outcome.Name(value)  # type: ignore[arg-type]
        if name == "OUTCOME_UNSPECIFIED":
            return cls.INTERNAL_ERROR
        return cls[name.removeprefix("OUTCOME_")]
