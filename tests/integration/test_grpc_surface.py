"""The wire contract: every service is served, health and reflection work, unimplemented RPCs say so."""

from __future__ import annotations

import subprocess
import sys

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from scriptpool.coordinator.server import SERVICE_NAMES
from scriptpool.sandbox.catalog import GLOBAL_OPS
from scriptpool.v1 import (
    artifacts_pb2,
    artifacts_pb2_grpc,
    common_pb2,
    events_pb2,
    events_pb2_grpc,
    sessions_pb2,
    state_pb2,
)
from tests.conftest import REPO, Stack


def test_generated_code_matches_the_proto_sources() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "proto" / "generate.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_health_reports_serving_for_every_service(stack: Stack) -> None:
    with grpc.insecure_channel(stack.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for name in ("", *SERVICE_NAMES):
            answer = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING, name


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
def test_reflection_lists_every_service(stack: Stack, version: str) -> None:
    """Both reflection versions answer (grpcurl and current tools ask v1 first, older ones v1alpha);
    v1's messages are v1alpha's, field for field."""
    with grpc.insecure_channel(stack.address) as channel:
        info = channel.stream_stream(
            f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        listed = {s.name for r in info(iter([request]), timeout=5) for s in r.list_services_response.service}
        symbol = reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE_NAMES[0])
        described = [r.file_descriptor_response.file_descriptor_proto for r in info(iter([symbol]), timeout=5)]
    assert set(SERVICE_NAMES) <= listed
    assert {"grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"} <= listed
    assert described and described[0]


def test_a_method_a_servicer_lacks_answers_unimplemented_naming_it() -> None:
    """Every RPC of the API is implemented now; `grpc_service` still answers UNIMPLEMENTED, naming the
    method, for one a servicer class does not define (as a newer API would have)."""
    from scriptpool.coordinator.status import grpc_service

    @grpc_service(events_pb2.DESCRIPTOR.services_by_name["HookService"])
    class Partial(events_pb2_grpc.HookServiceServicer):
        pass

    class Context:
        def abort(self, code: grpc.StatusCode, details: str) -> None:
            raise RuntimeError(code, details)

    with pytest.raises(RuntimeError) as caught:
        Partial().List(common_pb2.Empty(), Context())  # type: ignore[abstract, arg-type]
    assert caught.value.args == (grpc.StatusCode.UNIMPLEMENTED, caught.value.args[1])
    assert "HookService.List" in caught.value.args[1]


def test_a_server_streaming_rpc_maps_errors_like_a_unary_one(stack: Stack) -> None:
    _, key = stack.new_api_key()
    metadata = (("authorization", f"Bearer {key}"),)
    with grpc.insecure_channel(stack.address) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            list(
                artifacts_pb2_grpc.ArtifactServiceStub(channel).Get(
                    artifacts_pb2.GetArtifactRequest(), metadata=metadata
                )
            )
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT


def test_every_spec_operation_has_an_rpc() -> None:
    """Each Session/Artifact/State/Hook/Event operation a script can call is declared on the wire."""
    services = {
        "Session": sessions_pb2.DESCRIPTOR.services_by_name["SessionService"],
        "Artifact": artifacts_pb2.DESCRIPTOR.services_by_name["ArtifactService"],
        "State": state_pb2.DESCRIPTOR.services_by_name["StateService"],
    }
    client_side = {"Artifact": {"storeFile", "saveToFile"}}  # compose Store/GetContent with a local file
    for global_name, service in services.items():
        rpcs = {m.name.lower() for m in service.methods}
        for op in GLOBAL_OPS[global_name]:
            if op in client_side.get(global_name, set()):
                continue
            assert op.lower() in rpcs, f"{global_name}.{op} has no RPC on {service.name}"


def test_losing_redis_is_unavailable_and_recovers() -> None:
    """A coordinator whose Redis goes away answers UNAVAILABLE (retryable), not INTERNAL, on both the
    redis-py and the lean hot path, and works again once Redis is back."""
    import shutil
    import tempfile
    from pathlib import Path

    from scriptpool.client import ScriptpoolClient
    from scriptpool.coordinator.redis_server import PrivateRedis
    from scriptpool.coordinator.server import start_coordinator
    from scriptpool.coordinator.settings import Settings
    from scriptpool.errors import ScriptpoolError
    from scriptpool.v1 import state_pb2
    from scriptpool.values import from_value, to_value

    data = Path(tempfile.mkdtemp(prefix="sp-unavail-"))
    redis_server = PrivateRedis(data, persistent=True).start()
    coordinator = start_coordinator(Settings(redis_url=redis_server.url, listen="127.0.0.1:0", queue="unused"))
    try:
        key = coordinator.auth.create_api_key("unavailable-test")
        with ScriptpoolClient(f"127.0.0.1:{coordinator.port}", key) as client:
            client.state.set(state_pb2.SetStateRequest(scope="global", key="k", value=to_value(1)))
            redis_server.stop()
            for attempt in (
                lambda: client.create_session("x"),
                lambda: client.state.get(state_pb2.StateKey(scope="global", key="k")),
            ):
                with pytest.raises(ScriptpoolError) as caught:
                    attempt()
                assert caught.value.code == "UNAVAILABLE" and "Redis" in caught.value.message
            redis_server.start()
            answer = client.state.get(state_pb2.StateKey(scope="global", key="k"))
            assert answer.found and from_value(answer.value) == 1
    finally:
        coordinator.stop(grace=0)
        redis_server.stop()
        shutil.rmtree(data, ignore_errors=True)
