"""How results look at a terminal: JSON for values (bytes as {"$bytes": base64}), one-line failures."""

from __future__ import annotations

import base64
import json
from typing import Any

from google.protobuf.json_format import MessageToDict

from scriptpool.outcomes import Outcome
from scriptpool.v1 import jobs_pb2
from scriptpool.values import PlainValue, from_value


def _jsonable(value: PlainValue) -> Any:
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def to_json(value: PlainValue, *, indent: int | None = None) -> str:
    return json.dumps(_jsonable(value), indent=indent, ensure_ascii=False, sort_keys=True)


def outcome_of(job: jobs_pb2.Job) -> Outcome:
    return Outcome.from_proto(job.result.outcome)


def failure_line(job: jobs_pb2.Job) -> str:
    """One line naming the failure category: `script_error: line 3: attempt to call a nil value`."""
    outcome = outcome_of(job)
    message = job.result.message
    if outcome is Outcome.SCRIPT_ERROR and job.result.error.line:
        message = f"line {job.result.error.line}: {job.result.error.message}"
    return f"{outcome.value}: {message}" if message else outcome.value


def job_to_json(job: jobs_pb2.Job) -> str:
    data = MessageToDict(job, preserving_proto_field_name=True)
    if job.result.HasField("result"):
        data.setdefault("result", {})["result"] = _jsonable(from_value(job.result.result))
    data["outcome"] = outcome_of(job).value if job.status == jobs_pb2.JOB_STATUS_FINISHED else None
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False)
