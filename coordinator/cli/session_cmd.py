"""`scriptpool session ...`: the Session API for people at a terminal (`--json` for scripts)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from scriptpool.client import ScriptpoolClient
from scriptpool.coordinator.cli.audit_output import print_audit_log, when
from scriptpool.coordinator.cli.output import to_json
from scriptpool.coordinator.cli.parsing import non_negative_float, non_negative_int, positive_int
from scriptpool.core.session_values import session_to_plain
from scriptpool.errors import DeadlineExceeded, InvalidArgument
from scriptpool.v1 import sessions_pb2
from scriptpool.values import PlainValue, from_value_map

S = sessions_pb2
SHARE_LEVELS = ("read", "write", "admin")
"""As coordinator/stores/session_access.py LEVELS (the client commands import no store; a test
checks the two agree)."""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], with_client: object) -> None:
    p = sub.add_parser("session", help="manage sessions")
    assert callable(with_client)
    with_client(p)
    ssub = p.add_subparsers(dest="session_command", required=True)
    sp = ssub.add_parser("create", help="create a session and print its id")
    sp.add_argument("--name")
    sp.add_argument("--description")
    sp.add_argument("--tag", action="append", help="a tag (repeatable)")
    sp.add_argument("--metadata", help="metadata as a JSON object")
    sp.add_argument("--parent", help="parent session id")
    sp.add_argument("--json", action="store_true")
    sp = ssub.add_parser("list", help="list your sessions, most recently updated first")
    sp.add_argument("--tag", action="append", help="only sessions with this tag (repeatable: all of)")
    sp.add_argument("--name", help="name contains")
    sp.add_argument("--state", choices=["active", "suspended", "completed", "failed"])
    sp.add_argument("--limit", type=positive_int, default=100)
    sp.add_argument("--cursor", default="", help="go on from where a listing said more remain")
    sp.add_argument("--json", action="store_true")
    for name, text in (("get", "show one session"), ("suspend", "suspend a session"), ("resume", "resume it"),
                       ("complete", "mark it completed"), ("delete", "delete it with its timeline"),
                       ("save", "write a numbered snapshot")):  # fmt: skip
        sp = ssub.add_parser(name, help=text)
        sp.add_argument("session_id")
        sp.add_argument("--json", action="store_true")
    sp = ssub.add_parser("load", help="restore a snapshot (default: the latest) and make the session active")
    sp.add_argument("session_id")
    sp.add_argument("--snapshot", type=non_negative_int, default=0)
    sp.add_argument("--json", action="store_true")
    sp = ssub.add_parser("timeline", help="show a session's timeline")
    sp.add_argument("session_id")
    sp.add_argument("--after", default="", help="entry id to continue after")
    sp.add_argument("--limit", type=positive_int, default=100)
    sp.add_argument("--type", action="append", help="only entries of this type (repeatable)")
    sp.add_argument("--json", action="store_true")
    sp = ssub.add_parser("grant", help="share a session: give a principal read, write or admin on it")
    sp.add_argument("session_id")
    sp.add_argument("principal", help="a principal with an API key")
    sp.add_argument("level", choices=list(SHARE_LEVELS))
    sp.add_argument("--json", action="store_true")
    sp = ssub.add_parser("revoke", help="take a principal's grant on a session away")
    sp.add_argument("session_id")
    sp.add_argument("principal")
    sp.add_argument("--json", action="store_true")
    for name, text in (("grants", "show who a session is shared with"),
                       ("audit", "show a session's audit log: grants, revocations, refused accesses")):  # fmt: skip
        sp = ssub.add_parser(name, help=text)
        sp.add_argument("session_id")
        sp.add_argument("--json", action="store_true")
    sp = ssub.add_parser("replay", help="re-run a session's jobs in a new replay session")
    sp.add_argument("session_id")
    sp.add_argument("--speed", type=non_negative_float, default=0.0, help="scale of the recorded gaps (0 = no waiting)")
    sp.add_argument("--wait", action="store_true", help="wait for the replay and print its summary")
    sp.add_argument("--json", action="store_true")


_when = when


def _print_session(session: S.Session, as_json: bool) -> None:
    plain = session_to_plain(session)
    if as_json:
        print(to_json(plain, indent=2))
        return
    for key in ("id", "name", "state", "description", "tags", "metadata", "parent_session_id"):
        value = plain[key]
        shown = ", ".join(value) if key == "tags" and isinstance(value, list) else value  # type: ignore[arg-type]
        if key == "metadata":
            shown = to_json(value)
        print(f"{key + ':':19}{shown if shown not in (None, '') else '-'!s}")
    print(f"{'created:':19}{_when(session.created_at)}")
    print(f"{'updated:':19}{_when(session.updated_at)}")


def run(client: ScriptpoolClient, args: argparse.Namespace) -> int:
    command = args.session_command
    if command == "create":
        metadata = json.loads(args.metadata) if args.metadata else {}
        if not isinstance(metadata, dict):
            raise InvalidArgument("--metadata must be a JSON object")
        session = client.create_session(args.name or "", description=args.description or "", tags=args.tag or [],
                                        metadata=metadata, parent_session_id=args.parent or "")  # fmt: skip
        print(to_json(session_to_plain(session), indent=2) if args.json else session.id)
    elif command == "list":
        _list(client, args)
    elif command in ("get", "suspend", "resume", "complete"):
        sessions = client.sessions
        method = {"get": sessions.get, "suspend": sessions.suspend, "resume": sessions.resume,
                  "complete": sessions.complete}[command]  # fmt: skip
        _print_session(method(S.SessionRef(session_id=args.session_id)), args.json)
    elif command == "delete":
        client.sessions.delete(S.SessionRef(session_id=args.session_id))
        print(to_json({"deleted": args.session_id}) if args.json else f"deleted {args.session_id}")
    elif command == "save":
        number = client.sessions.save(S.SessionRef(session_id=args.session_id)).snapshot
        print(to_json({"snapshot": number}) if args.json else f"saved snapshot {number}")
    elif command == "load":
        request = S.LoadSessionRequest(session_id=args.session_id, snapshot=args.snapshot)
        _print_session(client.sessions.load(request), args.json)
    elif command == "timeline":
        _timeline(client, args)
    elif command in ("grant", "revoke", "grants", "audit"):
        _sharing(client, args)
    else:
        return _replay(client, args)
    return 0


def _list(client: ScriptpoolClient, args: argparse.Namespace) -> None:
    request = S.ListSessionsRequest(tags=args.tag or [], name=args.name or "")
    if args.state:
        request.state = S.SessionState.Value("SESSION_STATE_" + args.state.upper())
    request.page.limit = args.limit
    request.page.cursor = args.cursor
    response = client.list_sessions(request)
    found = response.sessions
    if response.next_cursor:  # a truncated answer is never silent (on stderr: stdout stays the listing)
        print(f"more sessions remain: pass --cursor {response.next_cursor}", file=sys.stderr)
    if args.json:
        sessions: list[PlainValue] = [session_to_plain(s) for s in found]
        print(to_json(sessions, indent=2))
        return
    print(f"{'ID':36}  {'STATE':9}  {'UPDATED':19}  {'NAME':24}  TAGS")
    for s in found:
        state = session_to_plain(s)["state"]
        print(f"{s.id:36}  {state!s:9}  {_when(s.updated_at)}  {s.name[:24]:24}  {','.join(s.tags)}")


def _timeline(client: ScriptpoolClient, args: argparse.Namespace) -> None:
    request = S.GetTimelineRequest(
        session_id=args.session_id, after=args.after, limit=args.limit, types=args.type or []
    )
    timeline = client.sessions.get_timeline(request)
    if args.json:
        entries: list[PlainValue] = [
            {"id": e.id, "timestamp": e.timestamp, "type": e.type, "description": e.description,
             "job_id": e.job_id or None, "data": from_value_map(e.data)}
            for e in timeline.entries
        ]  # fmt: skip
        print(to_json({"entries": entries, "next_after": timeline.next_after or None}, indent=2))
        return
    print(f"{'TIME':19}  {'TYPE':22}  {'JOB':8}  DESCRIPTION")
    for e in timeline.entries:
        print(f"{_when(e.timestamp)}  {e.type[:22]:22}  {e.job_id[:8]:8}  {e.description}")
    if timeline.next_after:
        print(f"(more: --after {timeline.next_after})")


def _sharing(client: ScriptpoolClient, args: argparse.Namespace) -> None:
    command = args.session_command
    if command == "audit":
        request = S.GetSessionAuditLogRequest(session_id=args.session_id)
        request.page.limit = 1000
        print_audit_log(client.sessions.get_audit_log(request), args.json)
        return
    if command == "grants":
        grants = client.sessions.list_grants(S.SessionRef(session_id=args.session_id))
    else:
        change = S.SessionGrantChange(
            session_id=args.session_id, principal=args.principal, level=getattr(args, "level", "")
        )
        grants = (client.sessions.grant if command == "grant" else client.sessions.revoke)(change)
    if args.json:
        print(to_json({"owner": grants.owner, "grants": {**grants.grants}}, indent=2))
        return
    print(f"{grants.owner}\towner")
    for principal, level in sorted(grants.grants.items()):
        print(f"{principal}\t{level}")


def _replay(client: ScriptpoolClient, args: argparse.Namespace) -> int:
    replay_id = client.sessions.replay(S.ReplayRequest(session_id=args.session_id, speed=args.speed)).replay_session_id
    if not args.wait:
        print(to_json({"replay_session_id": replay_id}) if args.json else replay_id)
        return 0
    give_up = time.monotonic() + 3600
    while time.monotonic() < give_up:
        metadata = from_value_map(client.get_session(replay_id).metadata)
        if metadata.get("status") != "running":
            summary = {"replay_session_id": replay_id, **metadata}
            print(to_json(summary, indent=None if not args.json else 2))
            return 0 if metadata.get("status") == "finished" and not metadata.get("diverged") else 1
        time.sleep(0.2)
    raise DeadlineExceeded(f"replay {replay_id} is still running after an hour")
