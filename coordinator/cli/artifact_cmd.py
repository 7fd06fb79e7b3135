"""`scriptpool artifact ...`: artifacts to and from local files, streamed (`--json` for scripts)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from scriptpool.client import ARTIFACT_CHUNK_BYTES, ScriptpoolClient
from scriptpool.coordinator.cli.audit_output import print_audit_log
from scriptpool.coordinator.cli.output import to_json
from scriptpool.coordinator.cli.parsing import non_negative_int
from scriptpool.core.artifact_values import info_to_plain
from scriptpool.errors import InvalidArgument
from scriptpool.v1 import artifacts_pb2
from scriptpool.values import PlainValue

A = artifacts_pb2
PROGRESS_FROM_BYTES = 8 * 1024 * 1024


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], with_client: object) -> None:
    p = sub.add_parser("artifact", help="store and fetch artifacts")
    assert callable(with_client)
    with_client(p)
    asub = p.add_subparsers(dest="artifact_command", required=True)
    sp = asub.add_parser("put", help="store a local file as an artifact (a new version if the name exists)")
    sp.add_argument("--session", required=True)
    sp.add_argument("file")
    sp.add_argument("--type", default="binary", help="artifact type (default: binary)")
    sp.add_argument("--name", help="artifact name (default: the file's name)")
    sp.add_argument("--description", default="")
    sp.add_argument("--tag", action="append", help="a tag (repeatable)")
    sp.add_argument("--json", action="store_true")
    sp = asub.add_parser("get", help="write an artifact's content to a local file")
    sp.add_argument("--session", required=True)
    sp.add_argument("artifact_id")
    sp.add_argument("-o", "--output", required=True, help="file to write ('-' for stdout)")
    sp.add_argument("--version", type=non_negative_int, default=0, help="version (default: latest)")
    sp = asub.add_parser("ls", help="list a session's artifacts, newest first")
    sp.add_argument("--session", required=True)
    sp.add_argument("--cursor", default="", help="go on from where a listing said more remain")
    sp.add_argument("--json", action="store_true")
    for name, text in (("rm", "delete an artifact with all its versions"), ("audit", "show an artifact's audit log")):
        sp = asub.add_parser(name, help=text)
        sp.add_argument("--session", required=True)
        sp.add_argument("artifact_id")
        sp.add_argument("--json", action="store_true")
    for name, text in (("grant", "give a principal a permission"), ("revoke", "take a permission away")):
        sp = asub.add_parser(name, help=text)
        sp.add_argument("--session", required=True)
        sp.add_argument("artifact_id")
        sp.add_argument("user", help="principal")
        sp.add_argument("permission", choices=["read", "write", "delete", "admin"])
        sp.add_argument("--json", action="store_true")


class Progress:
    """A one-line progress indicator on stderr, only for large transfers."""

    def __init__(self, verb: str, total: int) -> None:
        self.verb = verb
        self.total = total
        self.done = 0
        self.shown = total >= PROGRESS_FROM_BYTES

    def add(self, count: int) -> None:
        self.done += count
        if self.shown:
            percent = f" {100 * self.done // self.total:3d}%" if self.total else ""
            print(f"\r{self.verb} {self.done / 2**20:8.1f} MiB{percent}", end="", file=sys.stderr, flush=True)

    def finish(self) -> None:
        if self.shown:
            print(file=sys.stderr)


def _read_file(path: Path, progress: Progress) -> Iterator[bytes]:
    with path.open("rb") as f:
        while piece := f.read(ARTIFACT_CHUNK_BYTES):
            progress.add(len(piece))
            yield piece


def run(client: ScriptpoolClient, args: argparse.Namespace) -> int:
    command = args.artifact_command
    if command == "put":
        return _put(client, args)
    if command == "get":
        return _get(client, args)
    if command == "ls":
        request = A.ListArtifactsRequest(session_id=args.session)
        request.page.limit = 1000
        request.page.cursor = args.cursor
        listing = client.artifacts.list(request)
        if listing.next_cursor:  # a truncated answer is never silent (on stderr: stdout stays the listing)
            print(f"more artifacts remain: pass --cursor {listing.next_cursor}", file=sys.stderr)
        if args.json:
            items: list[PlainValue] = [info_to_plain(a) for a in listing.artifacts]
            print(to_json(items, indent=2))
            return 0
        print(f"{'ID':36}  {'VER':>3}  {'SIZE':>12}  {'TYPE':12}  NAME")
        for a in listing.artifacts:
            print(f"{a.id:36}  {a.version:>3}  {a.size:>12}  {a.type[:12]:12}  {a.metadata.name}")
        return 0
    key = A.ArtifactKey(session_id=args.session, artifact_id=args.artifact_id)
    if command == "rm":
        client.artifacts.delete(key)
        print(to_json({"deleted": args.artifact_id}) if args.json else f"deleted {args.artifact_id}")
    elif command in ("grant", "revoke"):
        change = A.PermissionChange(session_id=args.session, artifact_id=args.artifact_id, user=args.user,
                                    permission=args.permission)  # fmt: skip
        perms = (client.artifacts.grant_permission if command == "grant" else client.artifacts.revoke_permission)(
            change
        )
        grants = dict(perms.grants)
        if args.json:
            print(to_json({"owner": perms.owner, "grants": {**grants}}, indent=2))
        else:
            for user, level in sorted(grants.items()):
                print(f"{user}\t{level}{' (owner)' if user == perms.owner else ''}")
    else:
        _audit(client, args)
    return 0


def _put(client: ScriptpoolClient, args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InvalidArgument(f"cannot read {path}: {exc.strerror}") from None
    if not path.is_file():
        raise InvalidArgument(f"cannot read {path}: not a regular file")
    header = A.StoreArtifactChunk(
        session_id=args.session,
        type=args.type,
        metadata=A.ArtifactMetadata(name=args.name or path.name, description=args.description, tags=args.tag or []),
    )
    progress = Progress("sent", size)
    ref = client.store_artifact(header, _read_file(path, progress))
    progress.finish()
    if args.json:
        print(to_json({"id": ref.id, "session_id": ref.session_id, "content_hash": ref.content_hash,
                       "version": ref.version}, indent=2))  # fmt: skip
    else:
        print(ref.id)
    return 0


def _get(client: ScriptpoolClient, args: argparse.Namespace) -> int:
    """Write to a temporary file beside the target and rename it only when the stream ended cleanly."""
    info, chunks = client.read_artifact(args.session, args.artifact_id, args.version)
    progress = Progress("received", info.size)
    if args.output == "-":
        for chunk in chunks:
            sys.stdout.buffer.write(chunk)
            progress.add(len(chunk))
        sys.stdout.buffer.flush()
        progress.finish()
        return 0
    target = Path(args.output)
    if target.is_dir():
        raise InvalidArgument(f"cannot write {target}: it is a directory (name the file to write)")
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    try:
        with partial.open("wb") as f:
            for chunk in chunks:
                f.write(chunk)
                progress.add(len(chunk))
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
        progress.finish()
    return 0


def _audit(client: ScriptpoolClient, args: argparse.Namespace) -> None:
    request = A.GetAuditLogRequest(session_id=args.session, artifact_id=args.artifact_id)
    request.page.limit = 1000
    print_audit_log(client.artifacts.get_audit_log(request), args.json)
