"""`scriptpool job get|wait ID`: look at a job, or wait for it and print it as `run` does."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from scriptpool.client import ScriptpoolClient
from scriptpool.coordinator.cli.output import failure_line, job_to_json, outcome_of, to_json
from scriptpool.errors import InvalidArgument
from scriptpool.outcomes import Outcome
from scriptpool.v1 import jobs_pb2
from scriptpool.values import from_value

EXIT_OK = 0
EXIT_JOB_FAILED = 1


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], with_client: Callable[[argparse.ArgumentParser], None]
) -> None:
    job = sub.add_parser("job", help="look at a job or wait for it (e.g. after `run` lost its coordinator)")
    with_client(job)
    commands = job.add_subparsers(dest="job_command", required=True)
    commands.add_parser("get", help="print a job as JSON (its status, attempt and result when finished)").add_argument(
        "job_id"
    )
    wait = commands.add_parser("wait", help="wait for a job to finish and print it as `run` does (same exit codes)")
    wait.add_argument("job_id")
    wait.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the result")
    wait.add_argument("--json", action="store_true", help="print the whole job as JSON")


def check_non_negative(flag: str, value: float | None) -> None:
    """A numeric flag that may not be negative (nor NaN): one `error: INVALID_ARGUMENT` line, exit 2."""
    if value is not None and not value >= 0:
        raise InvalidArgument(f"{flag} must be 0 or more (got {value:g})")


def run(client: ScriptpoolClient, args: argparse.Namespace) -> int:
    if args.job_command == "get":
        print(job_to_json(client.get_job(args.job_id)))
        return EXIT_OK
    check_non_negative("--timeout", args.timeout)
    return print_finished(client.wait(args.job_id, timeout=args.timeout), as_json=args.json)


def print_finished(job: jobs_pb2.Job, *, as_json: bool) -> int:
    """What `run` and `job wait` print for a finished job, and their exit code."""
    if as_json:
        print(job_to_json(job))
    else:
        sys.stdout.write(job.result.output)
        if job.result.output_truncated:
            print("[output truncated at the job's output limit]")
        if outcome_of(job) is Outcome.OK:
            print(to_json(from_value(job.result.result)))
    if outcome_of(job) is not Outcome.OK:
        print(failure_line(job), file=sys.stderr)
        return EXIT_JOB_FAILED
    return EXIT_OK
