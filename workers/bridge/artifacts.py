"""The script-side Artifact.* operations: script values in, ArtifactService calls out.

Registered into the bridge's handler table by workers/bridge/host.py. An artifact id may be given as its
string or as the value `store`/`update` returned (a map with `id`). Content crosses as bytes: a
script string is stored as UTF-8 and marked as text (content_encoding "utf-8"), script bytes as
"binary". Content comes back as the script gave it, whatever the type and the read path (get,
lazy `.content`, getContent): a string for text, bytes for bytes. Versions that do not say (stored
before this, or by a client that does not say) come back as a string for `text`/`code` artifacts
that are valid UTF-8 and as bytes otherwise. In Lua both are strings, byte-exact.
"""

from __future__ import annotations

from collections.abc import Iterator

from scriptpool.core.artifact_values import content_value, info_to_plain
from scriptpool.core.defaults import ARTIFACT_CHUNK_BYTES
from scriptpool.errors import FailedPrecondition, InvalidArgument, PermissionDenied, ResourceExhausted
from scriptpool.v1 import artifacts_pb2, common_pb2
from scriptpool.values import PlainValue, to_value, to_value_map
from scriptpool.workers.bridge.args import UINT32_MAX, in_words, kind, page_value
from scriptpool.workers.bridge.args import count_arg as _count
from scriptpool.workers.bridge.args import string_arg as _string
from scriptpool.workers.bridge.args import strings_arg as _strings
from scriptpool.workers.bridge.args import table_arg as _table
from scriptpool.workers.bridge.args import time_arg as _time
from scriptpool.workers.bridge.calls import BridgeCalls, Handlers

A = artifacts_pb2
QUERY_FIELDS = ("session_id", "type", "tags", "tags_any", "name_pattern", "metadata", "created_after",
                "created_before", "min_size", "max_size", "sort", "limit", "cursor")  # fmt: skip
META_FIELDS = ("name", "description", "tags", "custom")
PAGE_FIELDS = ("limit", "cursor")
LIST_LIMIT = 1000
"""The page size of list/findByType/findByTag/search when the script gives no `limit` (the
coordinator's maximum): a longer answer comes with a `next_cursor` to pass back as `cursor`."""


def _content(value: PlainValue, op: str) -> tuple[bytes, str]:
    """The content's bytes and how it was given (content_encoding)."""
    if isinstance(value, str):
        return value.encode("utf-8"), "utf-8"
    if isinstance(value, bytes):
        return value, "binary"
    accepted = in_words(
        "a string or bytes", lua="a string", javascript="a string or a Uint8Array", python="a str or bytes"
    )
    raise InvalidArgument(f"{op}: content must be {accepted}, got {kind(value)}")


def _artifact_id(value: PlainValue, op: str) -> str:
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return str(value["id"])
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"{op}: an artifact id is required (the string or the value store returned)")
    return value


def _arg(args: list[PlainValue], index: int) -> PlainValue:
    return args[index] if len(args) > index else None


def _session(bridge: BridgeCalls, args: list[PlainValue], op: str) -> str:
    """The first argument; "" or nil means the job's current session."""
    first = _arg(args, 0)
    if isinstance(first, dict) and isinstance(first.get("id"), str):
        return str(first["id"])
    session_id = _string(first, f"{op}: session id")
    if session_id:
        return session_id
    if not bridge.current_session:
        raise InvalidArgument(f"{op}: a session id is required (this job has no current session)")
    return bridge.current_session


def _metadata(value: PlainValue, op: str) -> A.ArtifactMetadata:
    """{name, description, tags, custom, ...}: keys other than the first three go into custom."""
    meta = _table(value, f"{op}: metadata")
    custom = dict(_table(meta.get("custom"), f"{op}: metadata.custom"))
    custom.update({k: v for k, v in meta.items() if k not in META_FIELDS})
    return A.ArtifactMetadata(
        name=_string(meta.get("name"), f"{op}: metadata.name"),
        description=_string(meta.get("description"), f"{op}: metadata.description"),
        tags=_strings(meta.get("tags"), f"{op}: metadata.tags"),
        custom=to_value_map(custom),
    )


INLINE_CONTENT_BYTES = 64 * 1024
"""Artifact.get returns content up to this size inline; larger content is read on first access."""


def _ref(ref: A.ArtifactRef) -> PlainValue:
    return {"id": ref.id, "content_hash": ref.content_hash, "session_id": ref.session_id, "version": ref.version}


def _send(bridge: BridgeCalls, header: A.StoreArtifactChunk, content: bytes) -> PlainValue:
    # The job's artifact_bytes limit counts what the version stores: content and metadata alike.
    written = len(content) + header.ByteSize()
    bridge.charge_artifact_bytes(written, "Artifact.update" if header.artifact_id else "Artifact.store")

    def messages() -> Iterator[A.StoreArtifactChunk]:
        header.content = content[:ARTIFACT_CHUNK_BYTES]
        yield header
        for start in range(ARTIFACT_CHUNK_BYTES, len(content), ARTIFACT_CHUNK_BYTES):
            yield A.StoreArtifactChunk(content=content[start : start + ARTIFACT_CHUNK_BYTES])

    method = bridge.artifacts.Update if header.artifact_id else bridge.artifacts.Store
    return _ref(bridge.unary(method, messages()))


def _read(
    bridge: BridgeCalls, args: list[PlainValue], op: str, inline_limit: int | None = None
) -> tuple[A.ArtifactInfo | None, bytes | None]:
    """Info (Get only) and content. With `inline_limit`, content larger than it is not read at all
    (None): the engines fetch it with getContent only if the script touches `.content`."""
    version = _count(_arg(args, 2), f"{op}: version")
    request = A.GetArtifactRequest(
        session_id=_session(bridge, args, op), artifact_id=_artifact_id(_arg(args, 1), op), version=version
    )
    method = bridge.artifacts.Get if op == "Artifact.get" else bridge.artifacts.GetContent
    info = None
    parts = []
    received = 0
    stream = bridge.unary(method, request)
    for chunk in stream:
        if chunk.HasField("info"):
            info = chunk.info
            if inline_limit is not None and info.size > inline_limit:
                stream.cancel()
                return info, None
        received += len(chunk.content)
        if bridge.content_bytes_limit is not None and received > bridge.content_bytes_limit:
            stream.cancel()
            raise ResourceExhausted(
                f"{op}: the artifact's content is larger than this job's memory limit "
                f"({bridge.content_bytes_limit} bytes); read it in a job with a larger memory_bytes limit"
            )
        parts.append(chunk.content)
    return info, b"".join(parts)


# ---------------------------------------------------------------------------- handlers
def store(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    """store(session_id, {content, type, metadata}) or store(session_id, type, name, content, metadata)."""
    session_id = _session(bridge, args, op)
    if isinstance(_arg(args, 1), dict):
        spec = _table(args[1], f"{op}: artifact")
        unknown = sorted(set(spec) - {"content", "type", "metadata"})
        if unknown:
            raise InvalidArgument(f"{op}: unknown artifact field {unknown[0]!r}; use content, type and metadata")
        raw, kind, meta = spec.get("content"), spec.get("type"), _metadata(spec.get("metadata"), op)
    else:
        kind, raw = _arg(args, 1), _arg(args, 3)
        meta = _metadata(_arg(args, 4), op)
        meta.name = _string(_arg(args, 2), f"{op}: name")
    content, encoding = _content(raw, op)
    kind = _string(kind, f"{op}: type") or ("text" if isinstance(raw, str) else "binary")
    header = A.StoreArtifactChunk(session_id=session_id, type=kind, metadata=meta, content_encoding=encoding)
    return _send(bridge, header, content)


def update(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    """update(session_id, artifact_id, content [, metadata]) or update(session_id, id, {content, type, metadata})."""
    header = A.StoreArtifactChunk(session_id=_session(bridge, args, op), artifact_id=_artifact_id(_arg(args, 1), op))
    third = _arg(args, 2)
    if isinstance(third, dict):
        raw = third.get("content")
        header.type = _string(third.get("type"), f"{op}: type")
        if third.get("metadata") is not None:
            header.metadata.CopyFrom(_metadata(third["metadata"], op))
    else:
        raw = third
        if _arg(args, 3) is not None:
            header.metadata.CopyFrom(_metadata(args[3], op))
    content, header.content_encoding = _content(raw, op)
    return _send(bridge, header, content)


def get(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    """The artifact with its content inline when small; larger content is left out and read lazily
    by the engine (`.content` calls getContent on first access), so it is never fetched unless used."""
    info, content = _read(bridge, args, op, inline_limit=INLINE_CONTENT_BYTES)
    assert info is not None, "Get always sends the info first"
    return info_to_plain(info, content)


def get_content(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    """The content, text or bytes as for `get` (GetContent sends the info first; a coordinator
    older than that sends none, and the content is then bytes)."""
    info, content = _read(bridge, args, op)
    return content_value(info, content or b"") if info is not None else content or b""


def _listing(answer: A.ArtifactList) -> PlainValue:
    return page_value([info_to_plain(info) for info in answer.artifacts], answer.next_cursor)


def _page(page: common_pb2.PageRequest, args: list[PlainValue], index: int, op: str) -> None:
    """The trailing options `{limit, cursor}` of list/findByType/findByTag/search into `page`."""
    opts = _table(_arg(args, index), f"{op}: options")
    unknown = sorted(set(opts) - set(PAGE_FIELDS))
    if unknown:
        raise InvalidArgument(f"{op}: unknown option {unknown[0]!r}; allowed: {', '.join(PAGE_FIELDS)}")
    page.limit = _count(opts.get("limit"), f"{op}: limit", UINT32_MAX) or LIST_LIMIT
    page.cursor = _string(opts.get("cursor"), f"{op}: cursor")


def list_(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    """list(session_id [, {limit, cursor}])."""
    request = A.ListArtifactsRequest(session_id=_session(bridge, args, op))
    _page(request.page, args, 1, op)
    return _listing(bridge.unary(bridge.artifacts.List, request))


def delete(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    key = A.ArtifactKey(session_id=_session(bridge, args, op), artifact_id=_artifact_id(_arg(args, 1), op))
    bridge.unary(bridge.artifacts.Delete, key)
    return True


def query(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    q = _table(_arg(args, 0), f"{op}: query")
    unknown = sorted(set(q) - set(QUERY_FIELDS))
    if unknown:
        raise InvalidArgument(f"{op}: unknown query field {unknown[0]!r}; allowed: {', '.join(QUERY_FIELDS)}")
    request = A.ArtifactQuery(
        session_id=_string(q.get("session_id"), f"{op}: session_id"),
        type=_string(q.get("type"), f"{op}: type"),
        tags=_strings(q.get("tags"), f"{op}: tags"),
        tags_any=_strings(q.get("tags_any"), f"{op}: tags_any"),
        name_pattern=_string(q.get("name_pattern"), f"{op}: name_pattern"),
        metadata=to_value_map(_table(q.get("metadata"), f"{op}: metadata")),
        min_size=_count(q.get("min_size"), f"{op}: min_size"),
        max_size=_count(q.get("max_size"), f"{op}: max_size"),
        sort=_string(q.get("sort"), f"{op}: sort"),
    )
    for name in ("created_after", "created_before"):
        if q.get(name) is not None:
            getattr(request, name).CopyFrom(to_value(_time(q[name], f"{op}: {name}")))
    request.page.limit = _count(q.get("limit"), f"{op}: limit", UINT32_MAX)
    request.page.cursor = _string(q.get("cursor"), f"{op}: cursor")
    return _listing(bridge.unary(bridge.artifacts.Query, request))


def find_by_type(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    """findByType(session_id, type [, {limit, cursor}])."""
    request = A.FindByTypeRequest(session_id=_session(bridge, args, op), type=_string(_arg(args, 1), f"{op}: type"))
    _page(request.page, args, 2, op)
    return _listing(bridge.unary(bridge.artifacts.FindByType, request))


def find_by_tag(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    """findByTag(session_id, tag [, {limit, cursor}])."""
    request = A.FindByTagRequest(session_id=_session(bridge, args, op), tag=_string(_arg(args, 1), f"{op}: tag"))
    _page(request.page, args, 2, op)
    return _listing(bridge.unary(bridge.artifacts.FindByTag, request))


def search(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    """search(session_id, text [, {limit, cursor}])."""
    request = A.SearchArtifactsRequest(
        session_id=_session(bridge, args, op), text=_string(_arg(args, 1), f"{op}: text")
    )
    _page(request.page, args, 2, op)
    return _listing(bridge.unary(bridge.artifacts.Search, request))


def _permission_change(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> A.PermissionChange:
    return A.PermissionChange(
        session_id=_session(bridge, args, op),
        artifact_id=_artifact_id(_arg(args, 1), op),
        user=_string(_arg(args, 2), f"{op}: user"),
        permission=_string(_arg(args, 3), f"{op}: permission"),
    )


def _permissions(answer: A.Permissions) -> PlainValue:
    return {"owner": answer.owner, "grants": dict(answer.grants)}


def grant_permission(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    bridge.unary(bridge.artifacts.GrantPermission, _permission_change(bridge, op, args))
    return True


def revoke_permission(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    bridge.unary(bridge.artifacts.RevokePermission, _permission_change(bridge, op, args))
    return True


def get_permissions(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    key = A.ArtifactKey(session_id=_session(bridge, args, op), artifact_id=_artifact_id(_arg(args, 1), op))
    return _permissions(bridge.unary(bridge.artifacts.GetPermissions, key))


def check_access(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    change = _permission_change(bridge, op, args)
    request = A.CheckAccessRequest(session_id=change.session_id, artifact_id=change.artifact_id, user=change.user,
                                   permission=change.permission)  # fmt: skip
    return bool(bridge.unary(bridge.artifacts.CheckAccess, request).allowed)


def get_audit_log(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    request = A.GetAuditLogRequest(session_id=_session(bridge, args, op), artifact_id=_artifact_id(_arg(args, 1), op))
    request.page.limit = LIST_LIMIT
    log = bridge.unary(bridge.artifacts.GetAuditLog, request)
    return [
        {"timestamp": e.timestamp, "user": e.user, "job_id": e.job_id or None, "action": e.action,
         "allowed": e.allowed, "reason": e.reason}
        for e in log.entries
    ]  # fmt: skip


def check_scratch_path(path: PlainValue, op: str) -> str:
    """A path inside the job's root (its scratch directory, seen as `/`: a leading `/` is that root);
    anything that could leave it (`..`, `~`, NUL) is refused, as sandbox/scratch_files.py does."""
    if not isinstance(path, str) or not path:
        raise InvalidArgument(f"{op}: path must be a non-empty string")
    parts = path.replace("\\", "/").split("/")
    if "\x00" in path or ".." in parts or path.startswith("~"):
        raise PermissionDenied(f"{op}: path {path!r} leaves the job's root (its scratch directory, seen as /)")
    return path


def file_op(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    """The sandbox child performs file operations itself, jailed (sandbox/scratch_files.py); one that
    reaches the worker came from a child that skipped that layer, and the worker never opens a path a
    script chose."""
    check_scratch_path(_arg(args, 1 if op == "Artifact.storeFile" else 2), op)
    raise FailedPrecondition(f"{op} is performed inside the sandbox, in the job's scratch directory")


HANDLERS: Handlers = {
    "Artifact.store": store,
    "Artifact.update": update,
    "Artifact.get": get,
    "Artifact.getContent": get_content,
    "Artifact.list": list_,
    "Artifact.delete": delete,
    "Artifact.query": query,
    "Artifact.findByType": find_by_type,
    "Artifact.findByTag": find_by_tag,
    "Artifact.search": search,
    "Artifact.storeFile": file_op,
    "Artifact.saveToFile": file_op,
    "Artifact.grantPermission": grant_permission,
    "Artifact.revokePermission": revoke_permission,
    "Artifact.getPermissions": get_permissions,
    "Artifact.checkAccess": check_access,
    "Artifact.getAuditLog": get_audit_log,
}

__all__ = ["HANDLERS", "check_scratch_path"]
