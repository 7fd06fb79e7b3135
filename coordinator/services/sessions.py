"""SessionService: every Session operation of the spec.

Every call a running job makes is also appended to its session's timeline with its outcome.
"""

from __future__ import annotations

import grpc
from redis import Redis

from scriptpool.coordinator.auth import Authenticator, Caller
from scriptpool.coordinator.services.recording import record_job_call, recorded
from scriptpool.coordinator.status import grpc_service
from scriptpool.coordinator.stores import timeline
from scriptpool.coordinator.stores.replay import ReplayStore
from scriptpool.coordinator.stores.sessions import JOB_CURRENT_FIELD, SessionStore, job_current_session
from scriptpool.coordinator.stores.snapshots import SnapshotStore
from scriptpool.coordinator.stores.timeline import CallRecord
from scriptpool.core.keys import current_session_key, job_key
from scriptpool.errors import InvalidArgument, PermissionDenied
from scriptpool.sandbox.catalog import SCRIPT_OPS
from scriptpool.v1 import artifacts_pb2, common_pb2, sessions_pb2, sessions_pb2_grpc

"""Field of a job's record holding the session it chose with setCurrent ("" = none)."""


@grpc_service(sessions_pb2.DESCRIPTOR.services_by_name["SessionService"])
class SessionServicer(sessions_pb2_grpc.SessionServiceServicer):
    def __init__(
        self, auth: Authenticator, sessions: SessionStore, snapshots: SnapshotStore, replays: ReplayStore
    ) -> None:
        self.auth = auth
        self.sessions = sessions
        self.snapshots = snapshots
        self.replays = replays

    @property
    def timeline_redis(self) -> Redis:
        return self.sessions.redis

    @recorded("Session.create")
    def Create(self, caller: Caller, request: sessions_pb2.CreateSessionRequest) -> sessions_pb2.Session:
        return self.sessions.create(caller, request)

    @recorded("Session.get", records_itself=True)
    def Get(self, caller: Caller, request: sessions_pb2.SessionRef, record: CallRecord) -> sessions_pb2.Session:
        return self.sessions.get_recorded(caller, request.session_id, record)

    @recorded("Session.list")
    def List(self, caller: Caller, request: sessions_pb2.ListSessionsRequest) -> sessions_pb2.ListSessionsResponse:
        return self.sessions.list(caller, request)

    @recorded("Session.getCurrent")
    def GetCurrent(self, caller: Caller, request: common_pb2.Empty) -> sessions_pb2.CurrentSession:
        """A job's current session is the one it was submitted with until it calls setCurrent; a
        client's is kept per principal."""
        if caller.is_job:
            return sessions_pb2.CurrentSession(session_id=job_current_session(self.sessions.redis, caller))
        current = self.sessions.redis.get(_client_current_key(caller))
        session_id = current.decode() if isinstance(current, bytes) else ""
        if session_id and not self.sessions.exists_for(caller, session_id):
            session_id = ""
        return sessions_pb2.CurrentSession(session_id=session_id)

    @recorded("Session.setCurrent")
    def SetCurrent(self, caller: Caller, request: sessions_pb2.SetCurrentSessionRequest) -> sessions_pb2.CurrentSession:
        """Only for the rest of the calling job (kept in its job record), or per principal for clients."""
        if request.session_id:
            self.sessions.get(caller, request.session_id, "Session.setCurrent")  # owner only
        redis = self.sessions.redis
        if caller.is_job:
            redis.hset(job_key(caller.job_id), JOB_CURRENT_FIELD, request.session_id)
        elif request.session_id:
            redis.set(_client_current_key(caller), request.session_id)
        else:
            redis.delete(_client_current_key(caller))
        return sessions_pb2.CurrentSession(session_id=request.session_id)

    @recorded("Session.suspend")
    def Suspend(self, caller: Caller, request: sessions_pb2.SessionRef) -> sessions_pb2.Session:
        return self.sessions.transition(caller, request.session_id, "suspend")

    @recorded("Session.resume")
    def Resume(self, caller: Caller, request: sessions_pb2.SessionRef) -> sessions_pb2.Session:
        return self.sessions.transition(caller, request.session_id, "resume")

    @recorded("Session.complete")
    def Complete(self, caller: Caller, request: sessions_pb2.SessionRef) -> sessions_pb2.Session:
        return self.sessions.transition(caller, request.session_id, "complete")

    @recorded("Session.delete")
    def Delete(self, caller: Caller, request: sessions_pb2.SessionRef) -> common_pb2.Empty:
        self.sessions.delete(caller, request.session_id)
        return common_pb2.Empty()

    @recorded("Session.getMetadata", records_itself=True)
    def GetMetadata(self, caller: Caller, request: sessions_pb2.SessionRef, record: CallRecord) -> common_pb2.ValueMap:
        return self.sessions.get_recorded(caller, request.session_id, record).metadata

    @recorded("Session.updateMetadata")
    def UpdateMetadata(self, caller: Caller, request: sessions_pb2.UpdateMetadataRequest) -> common_pb2.ValueMap:
        return self.sessions.update_metadata(caller, request.session_id, request.updates)

    @recorded("Session.getTags", records_itself=True)
    def GetTags(self, caller: Caller, request: sessions_pb2.SessionRef, record: CallRecord) -> sessions_pb2.Tags:
        return sessions_pb2.Tags(tags=self.sessions.get_recorded(caller, request.session_id, record).tags)

    @recorded("Session.setTags")
    def SetTags(self, caller: Caller, request: sessions_pb2.SetTagsRequest) -> sessions_pb2.Tags:
        return sessions_pb2.Tags(tags=self.sessions.set_tags(caller, request.session_id, list(request.tags)))

    @recorded("Session.save")
    def Save(self, caller: Caller, request: sessions_pb2.SessionRef) -> sessions_pb2.SaveSessionResponse:
        return sessions_pb2.SaveSessionResponse(snapshot=self.snapshots.save(caller, request.session_id))

    @recorded("Session.load")
    def Load(self, caller: Caller, request: sessions_pb2.LoadSessionRequest) -> sessions_pb2.Session:
        return self.snapshots.load(caller, request.session_id, request.snapshot)

    @recorded("Session.saveAll")
    def SaveAll(self, caller: Caller, request: common_pb2.Empty) -> sessions_pb2.SaveAllResponse:
        return sessions_pb2.SaveAllResponse(snapshots=self.snapshots.save_all(caller))

    @recorded("Session.restoreRecent")
    def RestoreRecent(
        self, caller: Caller, request: sessions_pb2.RestoreRecentRequest
    ) -> sessions_pb2.RestoreRecentResponse:
        return sessions_pb2.RestoreRecentResponse(session_ids=self.snapshots.restore_recent(caller, request.count))

    @recorded("Session.canReplay")
    def CanReplay(self, caller: Caller, request: sessions_pb2.SessionRef) -> sessions_pb2.CanReplayResponse:
        return sessions_pb2.CanReplayResponse(replayable=self.replays.can_replay(caller, request.session_id))

    @recorded("Session.replay")
    def Replay(self, caller: Caller, request: sessions_pb2.ReplayRequest) -> sessions_pb2.ReplayResponse:
        return sessions_pb2.ReplayResponse(
            replay_session_id=self.replays.start(caller, request.session_id, request.speed)
        )

    @recorded("Session.getTimeline")
    def GetTimeline(self, caller: Caller, request: sessions_pb2.GetTimelineRequest) -> sessions_pb2.Timeline:
        self.sessions.get(caller, request.session_id, "Session.getTimeline")
        return timeline.read(self.sessions.redis, request.session_id, request, self.sessions.max_timeline_scan)

    @recorded("Session.getReplayMetadata")
    def GetReplayMetadata(self, caller: Caller, request: sessions_pb2.SessionRef) -> sessions_pb2.ReplayMetadata:
        return self.replays.metadata(caller, request.session_id)

    @recorded("Session.grant")
    def Grant(self, caller: Caller, request: sessions_pb2.SessionGrantChange) -> sessions_pb2.SessionGrants:
        return self._change_grant(caller, request, revoke=False)

    @recorded("Session.revoke")
    def Revoke(self, caller: Caller, request: sessions_pb2.SessionGrantChange) -> sessions_pb2.SessionGrants:
        return self._change_grant(caller, request, revoke=True)

    def _change_grant(
        self, caller: Caller, request: sessions_pb2.SessionGrantChange, *, revoke: bool
    ) -> sessions_pb2.SessionGrants:
        op = "Session.revoke" if revoke else "Session.grant"
        # Sharing is a person's decision: a script (or a leaked job credential) cannot share data out.
        caller.require_client(op)
        owner = self.sessions.get(caller, request.session_id, op).principal
        return self.sessions.access.change(
            caller, request.session_id, owner, request.principal, request.level, revoke=revoke
        )

    @recorded("Session.listGrants")
    def ListGrants(self, caller: Caller, request: sessions_pb2.SessionRef) -> sessions_pb2.SessionGrants:
        owner = self.sessions.get(caller, request.session_id, "Session.listGrants").principal
        return self.sessions.access.grants(request.session_id, owner)

    @recorded("Session.getAuditLog")
    def GetAuditLog(self, caller: Caller, request: sessions_pb2.GetSessionAuditLogRequest) -> artifacts_pb2.AuditLog:
        self.sessions.get(caller, request.session_id, "Session.getAuditLog")
        return self.sessions.access.read_audit(request.session_id, request.page)

    def RecordRefusedCall(self, request: sessions_pb2.RefusedCall, context: grpc.ServicerContext) -> common_pb2.Empty:
        """A job's call its worker refused before any RPC: on the job's session timeline like the rest."""
        caller = self.auth.caller(context)
        if not caller.is_job:
            raise PermissionDenied("RecordRefusedCall is for a running job's worker (job credential only)")
        if request.op not in SCRIPT_OPS:
            raise InvalidArgument(f"op: {request.op!r} is not a global operation of the script API")
        if request.code not in ERROR_CODES:
            raise InvalidArgument(f"code: {request.code!r} is not a gRPC status code name")
        record_job_call(self.timeline_redis, caller, request.op, request.code)
        return common_pb2.Empty()


ERROR_CODES = frozenset(code.name for code in grpc.StatusCode if code is not grpc.StatusCode.OK)


def _client_current_key(caller: Caller) -> str:
    return current_session_key(caller.principal)
