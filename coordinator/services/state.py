"""StateService: scoped key/value state (`State.*` in scripts).

Each operation records itself: its Lua script appends the job's `global_call` timeline entry in the
same Redis round trip (see coordinator/stores/state.py); a request refused before Redis is recorded
by `@recorded`.
"""

from __future__ import annotations

from redis import Redis

from scriptpool.coordinator.auth import Authenticator, Caller
from scriptpool.coordinator.services.recording import recorded
from scriptpool.coordinator.status import grpc_service
from scriptpool.coordinator.stores.state import StateStore
from scriptpool.coordinator.stores.timeline import CallRecord
from scriptpool.v1 import common_pb2, state_pb2, state_pb2_grpc


@grpc_service(state_pb2.DESCRIPTOR.services_by_name["StateService"])
class StateServicer(state_pb2_grpc.StateServiceServicer):
    def __init__(self, auth: Authenticator, store: StateStore) -> None:
        self.auth = auth
        self.store = store

    @property
    def timeline_redis(self) -> Redis:
        return self.store.redis

    @recorded("State.get", records_itself=True)
    def Get(self, caller: Caller, request: state_pb2.StateKey, record: CallRecord) -> state_pb2.StateValue:
        return self.store.get(caller, request.scope, request.key, record)

    @recorded("State.set", records_itself=True)
    def Set(self, caller: Caller, request: state_pb2.SetStateRequest, record: CallRecord) -> common_pb2.Empty:
        self.store.set(caller, request, record)
        return common_pb2.Empty()

    @recorded("State.delete", records_itself=True)
    def Delete(self, caller: Caller, request: state_pb2.StateKey, record: CallRecord) -> state_pb2.StateValue:
        return self.store.delete(caller, request.scope, request.key, record)

    @recorded("State.list", records_itself=True)
    def List(self, caller: Caller, request: state_pb2.StateScope, record: CallRecord) -> state_pb2.StateKeys:
        return self.store.list(caller, request.scope, record)

    @recorded("State.increment", records_itself=True)
    def Increment(
        self, caller: Caller, request: state_pb2.IncrementStateRequest, record: CallRecord
    ) -> state_pb2.StateValue:
        return self.store.increment(caller, request, record)

    @recorded("State.compareAndSet", records_itself=True)
    def CompareAndSet(
        self, caller: Caller, request: state_pb2.CompareAndSetRequest, record: CallRecord
    ) -> state_pb2.CompareAndSetResponse:
        return self.store.compare_and_set(caller, request, record)
