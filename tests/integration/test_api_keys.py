"""Key management over the API (issue 18 item 1, ADR 0019), on real Redis and real gRPC: AdminService
and `scriptpool keys`/`scriptpool apikey` create, list, revoke and rotate; scopes enforced on every
call; expired and revoked keys refused by the very next call on every coordinator replica (two
coordinators on one Redis); secrets never listed nor stored in clear; keys of earlier versions."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from scriptpool.client import ScriptpoolClient
from scriptpool.coordinator.embedded import EmbeddedStack
from scriptpool.coordinator.principals import principal_known
from scriptpool.coordinator.redis_server import PrivateRedis
from scriptpool.coordinator.server import RunningCoordinator, start_coordinator
from scriptpool.coordinator.stores.api_keys import ALL_SCOPES, ApiKeyStore, Scope, digest_of
from scriptpool.core.keys import apikey_key
from scriptpool.errors import (
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
    ScriptpoolError,
    Unauthenticated,
)
from scriptpool.languages import Language
from scriptpool.v1 import admin_pb2, common_pb2, events_pb2, jobs_pb2, sessions_pb2
from tests.conftest import CLI, Stack, wait_for


def _principal() -> str:
    return f"k-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def replica(stack: Stack) -> Iterator[RunningCoordinator]:
    """A second coordinator on the stack's Redis."""
    running = start_coordinator(stack.settings.with_overrides(listen="127.0.0.1:0"))
    yield running
    running.stop(grace=1)


@pytest.fixture(scope="module")
def admin_key(stack: Stack) -> str:
    return stack.coordinator.auth.create_api_key(_principal(), name="ops", scopes=ALL_SCOPES)


@pytest.fixture
def admin(stack: Stack, admin_key: str) -> Iterator[ScriptpoolClient]:
    with ScriptpoolClient(stack.address, admin_key) as client:
        yield client


def _create(admin: ScriptpoolClient, principal: str, *scopes: str, **fields: object) -> admin_pb2.CreatedKey:
    request = admin_pb2.CreateKeyRequest(principal=principal, scopes=list(scopes), **fields)  # type: ignore[arg-type]
    return admin.admin.create_key(request)


def _list(admin: ScriptpoolClient, principal: str) -> list[admin_pb2.KeyInfo]:
    return list(admin.admin.list_keys(admin_pb2.ListKeysRequest(principal=principal)).keys)


def _refusal(address: str, secret: str) -> ScriptpoolError | None:
    """What a read-only call with `secret` raises (None: it was served)."""
    with ScriptpoolClient(address, secret, reconnect_seconds=0) as client:
        try:
            client.sessions.list(sessions_pb2.ListSessionsRequest())
        except ScriptpoolError as exc:
            return exc
    return None


def test_create_list_revoke_rotate_over_grpc(admin: ScriptpoolClient, stack: Stack) -> None:
    principal = _principal()
    created = _create(admin, principal, "read", "submit", name="ci")
    assert created.secret.startswith("spk_")
    assert (created.key.principal, created.key.name, sorted(created.key.scopes)) == (
        principal,
        "ci",
        ["read", "submit"],
    )
    assert created.key.created_at > 0 and created.key.expires_at == 0 and created.key.revoked_at == 0
    assert _refusal(stack.address, created.secret) is None

    listed = _list(admin, principal)
    assert [key.id for key in listed] == [created.key.id]
    assert listed[0].last_used_at > 0  # (it was used just now)

    rotated = admin.admin.rotate_key(admin_pb2.KeyRef(id=created.key.id))
    assert rotated.secret != created.secret and rotated.key.id != created.key.id
    assert (rotated.key.principal, rotated.key.name, list(rotated.key.scopes)) == (principal, "ci", ["read", "submit"])
    old = _refusal(stack.address, created.secret)  # refused at once
    assert isinstance(old, Unauthenticated) and "revoked" in old.message
    assert _refusal(stack.address, rotated.secret) is None
    with pytest.raises(FailedPrecondition, match="revoked"):
        admin.admin.rotate_key(admin_pb2.KeyRef(id=created.key.id))

    revoked = admin.admin.revoke_key(admin_pb2.KeyRef(id=rotated.key.id))
    assert revoked.revoked_at > 0
    refused = _refusal(stack.address, rotated.secret)
    assert isinstance(refused, Unauthenticated) and rotated.key.id in refused.message
    assert {key.id: key.revoked_at > 0 for key in _list(admin, principal)} == {
        created.key.id: True,
        rotated.key.id: True,
    }
    assert not principal_known(stack.coordinator.auth.redis, principal)


def test_the_secret_is_never_listed_nor_stored_in_clear(admin: ScriptpoolClient, redis_client: Redis) -> None:
    principal = _principal()
    created = _create(admin, principal, name="clear")
    assert created.secret not in str(admin.admin.list_keys(admin_pb2.ListKeysRequest(principal=principal)))
    assert redis_client.type(apikey_key(digest_of(created.secret))) == b"hash"
    secret = created.secret.encode()
    for key in redis_client.scan_iter("sp:*", count=1000):  # every key, whatever its type, as Redis stores it
        dumped = redis_client.dump(key)
        assert secret not in key and (dumped is None or secret not in bytes(dumped))
    assert digest_of(created.secret) not in created.key.id


@pytest.mark.parametrize(
    ("scopes", "refused_call", "needed"),
    [
        (["read"], "submit", "submit"),
        (["submit"], "list", "read"),
        (["read", "submit"], "admin", "admin"),
    ],
)
def test_scopes_are_enforced(
    admin: ScriptpoolClient, stack: Stack, scopes: list[str], refused_call: str, needed: str
) -> None:
    secret = _create(admin, _principal(), *scopes).secret
    calls = {
        "submit": lambda c: c.submit(Language.LUA, "return 1"),
        "list": lambda c: c.sessions.list(sessions_pb2.ListSessionsRequest()),
        "admin": lambda c: c.admin.list_keys(admin_pb2.ListKeysRequest()),
    }
    with ScriptpoolClient(stack.address, secret, reconnect_seconds=0) as client:
        with pytest.raises(PermissionDenied, match=f"needs an API key with the '{needed}' scope"):
            calls[refused_call](client)
        if "read" in scopes:
            client.sessions.get_current(common_pb2.Empty())  # served
        if "submit" in scopes:
            assert client.submit(Language.LUA, "return 1").status != jobs_pb2.JOB_STATUS_UNSPECIFIED


def test_an_expired_key_is_refused_once_its_time_has_come(admin: ScriptpoolClient, stack: Stack) -> None:
    created = _create(admin, _principal(), expires_in_seconds=1.5)
    assert created.key.expires_at > created.key.created_at
    assert _refusal(stack.address, created.secret) is None
    assert wait_for(lambda: isinstance(_refusal(stack.address, created.secret), Unauthenticated), timeout=15)
    refused = _refusal(stack.address, created.secret)
    assert refused is not None and "expired" in refused.message


def test_a_revoked_key_is_refused_by_the_next_call_on_another_replica(
    admin: ScriptpoolClient, stack: Stack, replica: RunningCoordinator
) -> None:
    other = f"127.0.0.1:{replica.port}"
    created = _create(admin, _principal())
    secret, key_id = created.secret, created.key.id
    with ScriptpoolClient(other, secret, reconnect_seconds=0) as on_replica:
        for _ in range(3):  # served, and seen served, on the replica first
            on_replica.sessions.get_current(common_pb2.Empty())
        admin.admin.revoke_key(admin_pb2.KeyRef(id=key_id))  # through the first coordinator
        with pytest.raises(Unauthenticated, match="revoked"):
            on_replica.sessions.get_current(common_pb2.Empty())


def test_a_revoked_key_ends_its_live_event_stream(admin: ScriptpoolClient, stack: Stack) -> None:
    created = _create(admin, _principal(), "read", "submit")
    stop = threading.Event()
    with ScriptpoolClient(stack.address, created.secret, reconnect_seconds=0) as client:

        def emit() -> None:  # until the stream has seen one (it follows events from its start on)
            while not stop.wait(0.2):
                client.events.emit(events_pb2.EmitEventRequest(name="tick"))

        emitter = threading.Thread(target=emit, daemon=True)
        emitter.start()
        stream = client.follow_events("tick")
        try:
            assert next(stream).name == "tick"  # the stream is live
        finally:
            stop.set()
            emitter.join()
        admin.admin.revoke_key(admin_pb2.KeyRef(id=created.key.id))
        with pytest.raises(Unauthenticated, match=created.key.id):
            for _ in stream:  # (events already emitted may come first)
                pass


def test_bad_input_is_invalid_argument(admin: ScriptpoolClient) -> None:
    cases = [
        (admin_pb2.CreateKeyRequest(principal=_principal(), scopes=["read", "root"]), "unknown scope 'root'"),
        (admin_pb2.CreateKeyRequest(principal=_principal(), expires_in_seconds=-5), "expires_in"),
        (admin_pb2.CreateKeyRequest(principal="not a principal!"), "principal"),
        (admin_pb2.CreateKeyRequest(principal=""), "principal"),
        (admin_pb2.CreateKeyRequest(principal=_principal(), name="x" * 200), "name"),
    ]
    for request, words in cases:
        with pytest.raises(InvalidArgument, match=words):
            admin.admin.create_key(request)
    with pytest.raises(InvalidArgument, match="id"):
        admin.admin.revoke_key(admin_pb2.KeyRef(id="../etc"))
    with pytest.raises(InvalidArgument, match="page_size"):
        admin.admin.list_keys(admin_pb2.ListKeysRequest(page_size=-1))


def test_listing_is_paged_in_creation_order(admin: ScriptpoolClient) -> None:
    principal = _principal()
    ids = [_create(admin, principal, name=str(n)).key.id for n in range(5)]
    seen: list[str] = []
    token = ""
    while True:
        page = admin.admin.list_keys(admin_pb2.ListKeysRequest(principal=principal, page_size=2, page_token=token))
        assert len(page.keys) <= 2
        seen += [key.id for key in page.keys]
        token = page.next_page_token
        if not token:
            break
    assert seen == ids


def test_keys_per_principal_are_bounded(redis_client: Redis) -> None:
    store = ApiKeyStore(redis_client, max_keys_per_principal=2)
    principal = _principal()
    first = store.create(principal)
    store.create(principal)
    with pytest.raises(ResourceExhausted, match="2 active keys"):
        store.create(principal)
    store.revoke(first.record.id)
    store.create(principal)  # a revoked key no longer counts
    rotated = store.rotate(store.list_keys(principal).records[-1].id)  # a rotation swaps one for one
    assert rotated.record.principal == principal


def test_concurrent_creates_stop_at_exactly_the_bound(redis_server: PrivateRedis) -> None:
    principal = _principal()
    outcomes: list[str] = []

    def create() -> None:
        connection = Redis.from_url(redis_server.url)
        try:
            ApiKeyStore(connection, max_keys_per_principal=3).create(principal)
            outcomes.append("created")
        except ResourceExhausted:
            outcomes.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=create) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["created"] * 3 + ["refused"] * 9


def test_last_used_is_written_at_most_once_a_minute(admin: ScriptpoolClient, stack: Stack) -> None:
    created = _create(admin, _principal())
    assert _refusal(stack.address, created.secret) is None
    first = _list(admin, created.key.principal)[0].last_used_at
    assert first > 0
    assert _refusal(stack.address, created.secret) is None
    assert _list(admin, created.key.principal)[0].last_used_at == first


def test_a_key_of_an_earlier_version_keeps_working_with_submit_and_read(
    admin: ScriptpoolClient, stack: Stack, redis_client: Redis
) -> None:
    principal = _principal()
    legacy = "spk_" + uuid.uuid4().hex
    redis_client.set(apikey_key(digest_of(legacy)), principal)
    assert not principal_known(redis_client, principal)  # (not indexed before its first use)
    with ScriptpoolClient(stack.address, legacy, reconnect_seconds=0) as client:
        client.sessions.get_current(common_pb2.Empty())
        client.submit(Language.LUA, "return 1")
        with pytest.raises(PermissionDenied, match="'admin' scope"):
            client.admin.list_keys(admin_pb2.ListKeysRequest())
    listed = _list(admin, principal)
    assert len(listed) == 1 and listed[0].legacy and sorted(listed[0].scopes) == ["read", "submit"]
    assert principal_known(redis_client, principal)
    admin.admin.revoke_key(admin_pb2.KeyRef(id=listed[0].id))
    assert isinstance(_refusal(stack.address, legacy), Unauthenticated)


def test_up_makes_its_local_key_an_admin_key_even_one_of_an_earlier_version(
    stack: Stack, redis_client: Redis, tmp_path: Path
) -> None:
    settings = stack.settings.with_overrides(state_dir=tmp_path)
    legacy = "spk_" + uuid.uuid4().hex
    redis_client.set(apikey_key(digest_of(legacy)), "local")
    settings.api_key_file.write_text(legacy + "\n")
    assert EmbeddedStack(settings)._ensure_api_key(stack.redis_url) == legacy  # kept, and now an admin key
    with ScriptpoolClient(stack.address, legacy) as client:
        (key,) = [k for k in client.admin.list_keys(admin_pb2.ListKeysRequest(principal="local")).keys if k.legacy]
    assert sorted(key.scopes) == ["admin", "read", "submit"]
    settings.api_key_file.unlink()
    fresh = EmbeddedStack(settings)._ensure_api_key(stack.redis_url)
    assert fresh != legacy and stack.coordinator.auth.authenticate([("authorization", f"Bearer {fresh}")]).scopes == {
        Scope.ADMIN,
        Scope.READ,
        Scope.SUBMIT,
    }


def test_principal_known(admin: ScriptpoolClient, redis_client: Redis) -> None:
    principal = _principal()
    assert not principal_known(redis_client, principal)
    created = _create(admin, principal)
    assert principal_known(redis_client, principal)
    admin.admin.revoke_key(admin_pb2.KeyRef(id=created.key.id))
    assert not principal_known(redis_client, principal)
    with pytest.raises(InvalidArgument):
        principal_known(redis_client, "bad principal")


def test_a_job_credential_cannot_manage_keys(stack: Stack, redis_client: Redis) -> None:
    from tests.integration.helpers import release_job, running_job_credential

    with ScriptpoolClient(stack.address, stack.coordinator.auth.create_api_key(_principal())) as client:
        job_id, credential = running_job_credential(client, redis_client)
        try:
            with ScriptpoolClient(stack.address, credential, reconnect_seconds=0) as as_job:
                with pytest.raises(PermissionDenied, match="job credential cannot"):
                    as_job.admin.list_keys(admin_pb2.ListKeysRequest())
        finally:
            release_job(job_id)


# ---------------------------------------------------------------- the CLI
def _cli(args: list[str], stack: Stack, key: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REDIS_URL": stack.redis_url, "SCRIPTPOOL_COORDINATOR": stack.address}
    env.pop("SCRIPTPOOL_API_KEY", None)
    if key:
        env["SCRIPTPOOL_API_KEY"] = key
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=60)


def test_the_cli_bootstraps_an_admin_and_manages_keys(stack: Stack) -> None:
    boot = _cli(["apikey", "create", _principal(), "--scopes", "admin", "--name", "boot", "--json"], stack)
    assert boot.returncode == 0, boot.stderr
    admin_secret = json.loads(boot.stdout)["secret"]
    assert json.loads(boot.stdout)["key"]["scopes"] == ["admin"]

    principal = _principal()
    made = _cli(["keys", "create", principal, "--scopes", "read", "--expires-in", "30d"], stack, admin_secret)
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert secret.startswith("spk_") and "\n" not in secret
    assert _refusal(stack.address, secret) is None

    listed = _cli(["keys", "list", "--principal", principal, "--json"], stack, admin_secret)
    assert listed.returncode == 0, listed.stderr
    assert secret not in listed.stdout
    (key,) = json.loads(listed.stdout)
    assert key["scopes"] == ["read"] and key["expires_at"] and key["revoked_at"] is None

    rotated = _cli(["keys", "rotate", key["id"], "--json"], stack, admin_secret)
    assert rotated.returncode == 0, rotated.stderr
    new = json.loads(rotated.stdout)
    assert new["key"]["scopes"] == ["read"] and new["key"]["expires_at"] == key["expires_at"]
    assert isinstance(_refusal(stack.address, secret), Unauthenticated)

    revoked = _cli(["keys", "revoke", new["key"]["id"]], stack, admin_secret)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout, revoked.stderr
    assert isinstance(_refusal(stack.address, new["secret"]), Unauthenticated)
    text = _cli(["keys", "list", "--principal", principal], stack, admin_secret)
    assert text.stdout.count("revoked") == 2 and new["secret"] not in text.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["apikey", "create", "someone", "--scopes", "root"],
        ["apikey", "create", "someone", "--expires-in", "-5"],
        ["apikey", "create", "not a principal!"],
        ["keys", "create", "someone", "--scopes", "read,root"],
        ["keys", "create", "someone", "--expires-in", "soon"],
        ["keys", "create", "bad principal"],
        ["keys", "revoke", "no-such-id!"],
    ],
)
def test_cli_mistakes_are_one_line_and_exit_2(stack: Stack, admin_key: str, args: list[str]) -> None:
    done = _cli(args, stack, admin_key)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: INVALID_ARGUMENT") and done.stderr.count("\n") == 1, done.stderr


def test_keys_without_an_admin_key_is_permission_denied(stack: Stack) -> None:
    done = _cli(["keys", "list"], stack, stack.coordinator.auth.create_api_key(_principal()))
    assert done.returncode == 2 and "PERMISSION_DENIED" in done.stderr and "'admin' scope" in done.stderr
