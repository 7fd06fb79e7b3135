"""Services of the API that this version does not implement yet: every RPC answers UNIMPLEMENTED
with the method's name (the wire contract is complete; see proto/scriptpool/v1)."""

from __future__ import annotations

from scriptpool.v1 import (
    events_pb2,
    events_pb2_grpc,
)

from coordinator.status import grpc_service


@grpc_service(events_pb2.DESCRIPTOR.services_by_name["HookService"])
class HookServicer(events_pb2_grpc.HookServiceServicer):
    pass
