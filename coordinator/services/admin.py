"""AdminService: create, list, revoke and rotate API keys (every RPC needs the `admin` scope,
checked before the handler by `coordinator/scopes.py`)."""

from __future__ import annotations

import grpc

from scriptpool.coordinator.auth import Authenticator
from scriptpool.coordinator.status import grpc_service
from scriptpool.coordinator.stores.api_keys import CreatedKey, KeyRecord, parse_scopes
from scriptpool.v1 import admin_pb2, admin_pb2_grpc


def key_info(record: KeyRecord) -> admin_pb2.KeyInfo:
    return admin_pb2.KeyInfo(
        id=record.id, principal=record.principal, name=record.name, scopes=sorted(record.scopes),
        created_at=record.created, expires_at=record.expires, last_used_at=record.last_used,
        revoked_at=record.revoked, legacy=record.legacy,
    )  # fmt: skip


def created_key(created: CreatedKey) -> admin_pb2.CreatedKey:
    return admin_pb2.CreatedKey(secret=created.secret, key=key_info(created.record))


@grpc_service(admin_pb2.DESCRIPTOR.services_by_name["AdminService"])
class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    def __init__(self, auth: Authenticator) -> None:
        self.auth = auth
        self.keys = auth.keys

    def CreateKey(self, request: admin_pb2.CreateKeyRequest, context: grpc.ServicerContext) -> admin_pb2.CreatedKey:
        self.auth.caller(context)
        created = self.keys.create(
            request.principal,
            name=request.name,
            scopes=parse_scopes(request.scopes),
            expires_in=request.expires_in_seconds,
        )
        return created_key(created)

    def ListKeys(self, request: admin_pb2.ListKeysRequest, context: grpc.ServicerContext) -> admin_pb2.ListKeysResponse:
        self.auth.caller(context)
        page = self.keys.list_keys(request.principal, request.page_size, request.page_token)
        return admin_pb2.ListKeysResponse(keys=[key_info(r) for r in page.records], next_page_token=page.next_token)

    def RevokeKey(self, request: admin_pb2.KeyRef, context: grpc.ServicerContext) -> admin_pb2.KeyInfo:
        self.auth.caller(context)
        return key_info(self.keys.revoke(request.id))

    def RotateKey(self, request: admin_pb2.KeyRef, context: grpc.ServicerContext) -> admin_pb2.CreatedKey:
        self.auth.caller(context)
        return created_key(self.keys.rotate(request.id))
