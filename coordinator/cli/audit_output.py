"""How an audit log prints (an artifact's, `scriptpool artifact audit`, or a session's, `scriptpool session audit`)."""

from __future__ import annotations

from datetime import UTC, datetime

from scriptpool.coordinator.cli.output import to_json
from scriptpool.v1 import artifacts_pb2
from scriptpool.values import PlainValue


def when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S")


def print_audit_log(log: artifacts_pb2.AuditLog, as_json: bool) -> None:
    if as_json:
        entries: list[PlainValue] = [
            {"timestamp": e.timestamp, "user": e.user, "job_id": e.job_id or None, "action": e.action,
             "allowed": e.allowed, "reason": e.reason}
            for e in log.entries
        ]  # fmt: skip
        print(to_json(entries, indent=2))
        return
    print(f"{'TIME':19}  {'USER':20}  {'ACTION':22}  {'OK':3}  REASON")
    for e in log.entries:
        print(
            f"{when(e.timestamp)}  {e.user[:20]:20}  {e.action[:22]:22}  {'yes' if e.allowed else 'NO':3}  {e.reason}"
        )
