"""SessionService. Implemented: Create, Get, List. The rest answer UNIMPLEMENTED (see status.py)."""

from __future__ import annotations

import grpc
from scriptpool.v1 import sessions_pb2, sessions_pb2_grpc

from coordinator.auth import Authenticator
from coordinator.status import grpc_service
from coordinator.stores.sessions import SessionStore


@grpc_service(sessions_pb2.DESCRIPTOR.services_by_name["SessionService"])
class SessionServicer(sessions_pb2_grpc.SessionServiceServicer):
    def __init__(self, auth: Authenticator, sessions: SessionStore) -> None:
        self.auth = auth
        self.sessions = sessions

    def Create(self, request: sessions_pb2.CreateSessionRequest, context: grpc.ServicerContext) -> sessions_pb2.Session:
        return self.sessions.create(self.auth.caller(context), request)

    def Get(self, request: sessions_pb2.SessionRef, context: grpc.ServicerContext) -> sessions_pb2.Session:
        return self.sessions.get(self.auth.caller(context), request.session_id)

    def List(
        self, request: sessions_pb2.ListSessionsRequest, context: grpc.ServicerContext
    ) -> sessions_pb2.ListSessionsResponse:
        return self.sessions.list(self.auth.caller(context), request)
