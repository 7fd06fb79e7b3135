"""ArtifactService: every Artifact operation of the spec, content streamed in ARTIFACT_CHUNK_BYTES pieces.

Store/Update read the request stream one message at a time and write each piece to Redis as it
arrives; Get/GetContent send one stored chunk at a time. Neither ever holds a whole artifact.
Every call a running job makes is also appended to its session's timeline with its outcome.
"""

from __future__ import annotations

from collections.abc import Iterator

from redis import Redis

from scriptpool.coordinator.auth import Authenticator, Caller
from scriptpool.coordinator.services.recording import recorded
from scriptpool.coordinator.status import grpc_service
from scriptpool.coordinator.stores.artifacts import ArtifactStore
from scriptpool.errors import InvalidArgument
from scriptpool.v1 import artifacts_pb2, artifacts_pb2_grpc, common_pb2

A = artifacts_pb2
FIND_PAGE = 1000
"""findByType/findByTag/search page size when the request gives no limit (the most one page holds)."""


def _header(request_iterator: Iterator[A.StoreArtifactChunk]) -> A.StoreArtifactChunk:
    first = next(request_iterator, None)
    if first is None:
        raise InvalidArgument("empty request stream: the first message must carry the artifact's header")
    return first


@grpc_service(A.DESCRIPTOR.services_by_name["ArtifactService"])
class ArtifactServicer(artifacts_pb2_grpc.ArtifactServiceServicer):
    def __init__(self, auth: Authenticator, store: ArtifactStore) -> None:
        self.auth = auth
        self.store = store

    @property
    def timeline_redis(self) -> Redis:
        return self.store.redis

    @recorded("Artifact.store")
    def Store(self, caller: Caller, request_iterator: Iterator[A.StoreArtifactChunk]) -> A.ArtifactRef:
        header = _header(request_iterator)
        if header.artifact_id:
            raise InvalidArgument("Store creates artifacts (or a new version by name); use Update with an artifact id")
        return self.store.store(caller, header, (m.content for m in request_iterator))

    @recorded("Artifact.update")
    def Update(self, caller: Caller, request_iterator: Iterator[A.StoreArtifactChunk]) -> A.ArtifactRef:
        header = _header(request_iterator)
        if not header.artifact_id:
            raise InvalidArgument("Update needs artifact_id in its first message")
        return self.store.store(caller, header, (m.content for m in request_iterator))

    @recorded("Artifact.get")
    def Get(self, caller: Caller, request: A.GetArtifactRequest) -> Iterator[A.ArtifactChunk]:
        info, chunks = self.store.read(caller, request, "get")
        return _stream(chunks, info)

    @recorded("Artifact.getContent")
    def GetContent(self, caller: Caller, request: A.GetArtifactRequest) -> Iterator[A.ArtifactChunk]:
        info, chunks = self.store.read(caller, request, "getContent")
        return _stream(chunks, info)  # the info first, so a reader knows text from bytes

    @recorded("Artifact.list")
    def List(self, caller: Caller, request: A.ListArtifactsRequest) -> A.ArtifactList:
        return self.store.list(caller, request.session_id, request.page)

    @recorded("Artifact.delete")
    def Delete(self, caller: Caller, request: A.ArtifactKey) -> common_pb2.Empty:
        self.store.delete(caller, request.session_id, request.artifact_id)
        return common_pb2.Empty()

    @recorded("Artifact.query")
    def Query(self, caller: Caller, request: A.ArtifactQuery) -> A.ArtifactList:
        return self.store.query(caller, request)

    @recorded("Artifact.findByType")
    def FindByType(self, caller: Caller, request: A.FindByTypeRequest) -> A.ArtifactList:
        if not request.type:
            raise InvalidArgument("findByType needs a type")
        return self._in_session(caller, request.session_id, A.ArtifactQuery(type=request.type, page=request.page))

    @recorded("Artifact.findByTag")
    def FindByTag(self, caller: Caller, request: A.FindByTagRequest) -> A.ArtifactList:
        if not request.tag:
            raise InvalidArgument("findByTag needs a tag")
        return self._in_session(caller, request.session_id, A.ArtifactQuery(tags=[request.tag], page=request.page))

    @recorded("Artifact.search")
    def Search(self, caller: Caller, request: A.SearchArtifactsRequest) -> A.ArtifactList:
        if not request.text.strip():
            raise InvalidArgument("search needs some text to look for")
        query = A.ArtifactQuery(session_id=request.session_id, page=request.page)
        query.page.limit = query.page.limit or FIND_PAGE
        return self.store.query(caller, query, request.text)

    def _in_session(self, caller: Caller, session_id: str, query: A.ArtifactQuery) -> A.ArtifactList:
        if not session_id:
            raise InvalidArgument("a session id is required")
        query.session_id = session_id
        query.page.limit = query.page.limit or FIND_PAGE
        return self.store.query(caller, query)

    @recorded("Artifact.grantPermission")
    def GrantPermission(self, caller: Caller, request: A.PermissionChange) -> A.Permissions:
        return self.store.change_permission(caller, request, "grant")

    @recorded("Artifact.revokePermission")
    def RevokePermission(self, caller: Caller, request: A.PermissionChange) -> A.Permissions:
        return self.store.change_permission(caller, request, "revoke")

    @recorded("Artifact.getPermissions")
    def GetPermissions(self, caller: Caller, request: A.ArtifactKey) -> A.Permissions:
        return self.store.permissions(caller, request)

    @recorded("Artifact.checkAccess")
    def CheckAccess(self, caller: Caller, request: A.CheckAccessRequest) -> A.CheckAccessResponse:
        return A.CheckAccessResponse(allowed=self.store.check_access(caller, request))

    @recorded("Artifact.getAuditLog")
    def GetAuditLog(self, caller: Caller, request: A.GetAuditLogRequest) -> A.AuditLog:
        return self.store.audit_log(caller, request)


def _stream(chunks: Iterator[bytes], info: A.ArtifactInfo | None) -> Iterator[A.ArtifactChunk]:
    if info is not None:
        yield A.ArtifactChunk(info=info)
    for chunk in chunks:
        yield A.ArtifactChunk(content=chunk)
