"""`scriptpool job get|wait|cancel ID`, `scriptpool job list [--session S]`: look at jobs, wait for one
(printed as `run` prints it), cancel one, list a session's jobs."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from scriptpool.client import ScriptpoolClient
from scriptpool.coordinator.cli.output import failure_line, job_to_json, outcome_of, to_json
from scriptpool.coordinator.cli.parsing import non_negative_float, positive_int
from scriptpool.errors import InvalidArgument
from scriptpool.languages import Language
from scriptpool.outcomes import Outcome
from scriptpool.v1 import common_pb2, jobs_pb2
from scriptpool.values import from_value

EXIT_OK = 0
EXIT_JOB_FAILED = 1


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], with_client: Callable[[argparse.ArgumentParser], None]
) -> None:
    job = sub.add_parser("job", help="look at a job, wait for it, cancel it, or list a session's jobs")
    with_client(job)
    commands = job.add_subparsers(dest="job_command", required=True)
    commands.add_parser("get", help="print a job as JSON (its status, attempt and result when finished)").add_argument(
        "job_id"
    )
    wait = commands.add_parser("wait", help="wait for a job to finish and print it as `run` does (same exit codes)")
    wait.add_argument("job_id")
    wait.add_argument("--timeout", type=non_negative_float, default=300.0, help="seconds to wait for the result")
    wait.add_argument("--json", action="store_true", help="print the whole job as JSON")
    cancel = commands.add_parser("cancel", help="cancel a queued or running job and print its state")
    cancel.add_argument("job_id")
    cancel.add_argument("--json", action="store_true", help="print the whole job as JSON")
    listing = commands.add_parser("list", help="a session's jobs, newest first (default: your current session)")
    listing.add_argument("--session", help="the session (default: the one `session use` made current)")
    listing.add_argument("--limit", type=positive_int, default=50, help="jobs per page (default 50, at most 1000)")
    listing.add_argument("--cursor", default="", help="go on from where a listing said more remain")
    listing.add_argument("--json", action="store_true", help="the jobs as a JSON array")


def check_non_negative(flag: str, value: float | None) -> None:
    """A numeric flag that may not be negative (nor NaN): one `error: INVALID_ARGUMENT` line, exit 2."""
    if value is not None and not value >= 0:
        raise InvalidArgument(f"{flag} must be 0 or more (got {value:g})")


def run(client: ScriptpoolClient, args: argparse.Namespace) -> int:
    if args.job_command == "get":
        print(job_to_json(client.get_job(args.job_id)))
        return EXIT_OK
    if args.job_command == "cancel":
        job = client.cancel(args.job_id)
        print(job_to_json(job) if args.json else f"{job.id} {status_word(job)}")
        return EXIT_OK
    if args.job_command == "list":
        return _list(client, args)
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


def status_word(job: jobs_pb2.Job) -> str:
    """`queued`, `running`, or the outcome of a finished job (`ok`, `cancelled`, ...)."""
    if job.status == jobs_pb2.JOB_STATUS_FINISHED:
        return outcome_of(job).value
    return jobs_pb2.JobStatus.Name(job.status).removeprefix("JOB_STATUS_").lower()


def _list(client: ScriptpoolClient, args: argparse.Namespace) -> int:
    session_id = args.session or client.sessions.get_current(common_pb2.Empty()).session_id
    if not session_id:
        raise InvalidArgument("no session: pass --session ID (or make one current with `scriptpool session use`)")
    request = jobs_pb2.ListJobsRequest(session_id=session_id)
    request.page.limit = args.limit
    request.page.cursor = args.cursor
    response = client.list_jobs(request)
    if response.next_cursor:  # a truncated answer is never silent (on stderr: stdout stays the listing)
        print(f"more jobs remain: pass --cursor {response.next_cursor}", file=sys.stderr)
    if args.json:
        print("[" + ",".join(job_to_json(job) for job in response.jobs) + "]")
        return EXIT_OK
    print(f"{'ID':36}  {'LANGUAGE':10}  {'STATUS':18}  ATTEMPT")
    for job in response.jobs:
        language = Language.from_proto(job.language).value if job.language else "?"
        print(f"{job.id:36}  {language:10}  {status_word(job):18}  {job.attempt}")
    return EXIT_OK
