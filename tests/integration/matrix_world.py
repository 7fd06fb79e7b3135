"""The access matrix's parts (tests/integration/test_access_matrix*.py): the owner's objects of
every kind (`World`), what the owner reads back to see that a refused call changed nothing
(`fingerprint`), and the callers of the matrix's columns (`Column`), each with its credential."""

from __future__ import annotations

import enum
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

import grpc
from redis import Redis

from scriptpool.client import ScriptpoolClient
from scriptpool.coordinator.stores.api_keys import ALL_SCOPES, Scope, digest_of
from scriptpool.core.job_records import credential_hash
from scriptpool.core.keys import apikey_key, snapshot_key
from scriptpool.errors import NotFound, Unauthenticated
from scriptpool.languages import Language
from scriptpool.v1 import common_pb2
from tests.conftest import Stack, wait_for

from .helpers import HeldJob, release_job, result_of, running_job_credential, submit_held, subscribe
from .probes import ONE, ST, A, E, Ids, J, S, Stubs

READER = "t-matrix-reader"
"""A third principal the owner granted read on the world's session and on its artifact (what the
revoke rows take away and the grant rows raise)."""


@dataclass
class World:
    """One of each kind of object of the owner's: session (with a snapshot, a tag and a state key
    `k` = 1), artifact in it (READER may read it), job, event subscription, hook registration and
    API key."""

    ids: Ids
    key_secret: str
    client: ScriptpoolClient
    revoke_key: Callable[[str], object]
    held: HeldJob | None = None
    """The job, when the world's job must still be running (to be cancelled)."""

    def close(self) -> None:
        """Release the held job, and give back what counts against the owner's bounds (keys, hooks,
        subscriptions, sessions)."""
        if self.held is not None:
            self.held.release()
        with self.client:  # (what the row itself deleted is NotFound)
            with suppress(NotFound):
                self.client.hooks.unregister(E.HookRef(hook_id=self.ids["hook"]))
            with suppress(NotFound):
                self.client.events.unsubscribe(E.Subscription(subscription_id=self.ids["subscription"]))
            with suppress(NotFound):
                self.client.sessions.delete(S.SessionRef(session_id=self.ids["session"]))
        with suppress(NotFound):
            self.revoke_key(self.ids["key"])


@dataclass(frozen=True)
class Shape:
    """What a row needs of its world beyond the usual."""

    running_job: bool = False
    """the job is still running (held until the world closes)"""
    suspended: bool = False
    """the session is suspended"""
    ran: bool = False
    """the job ran in the world's session (so the session has a job to replay)"""
    queued: bool = False
    """the job was just submitted into the world's session (it may be queued, running or done)"""


def build_world(stack: Stack, who: Callers, job_id: str, shape: Shape = Shape()) -> World:
    """A fresh world; its job is `job_id` (a finished job of the owner's) unless `shape` says
    otherwise. The session is shared with each grantee column at its level, and with READER (read)."""
    client = ScriptpoolClient(stack.address, who.tokens[Column.OWNER])
    session_id = client.create_session("matrix", tags=["t"]).id
    for column, level in GRANTED.items():
        change = S.SessionGrantChange(session_id=session_id, principal=who.principals[column], level=level)
        client.sessions.grant(change)
    client.sessions.grant(S.SessionGrantChange(session_id=session_id, principal=READER, level="read"))
    client.state.set(ST.SetStateRequest(scope=f"session:{session_id}", key="k", value=ONE))
    header = A.StoreArtifactChunk(
        session_id=session_id, type="text", metadata=A.ArtifactMetadata(name="hello", tags=["t"])
    )
    artifact_id = client.store_artifact(header, [b"hello secret"]).id
    grant = A.PermissionChange(session_id=session_id, artifact_id=artifact_id, user=READER, permission="read")
    client.artifacts.grant_permission(grant)
    held = None
    if shape.ran:
        job = client.run(Language.LUA, "return 1", session_id=session_id, timeout=60)
        assert result_of(job) == 1
        job_id = job.id
    client.sessions.save(S.SessionRef(session_id=session_id))
    if shape.running_job:
        held = submit_held(client, session_id=session_id)
        held.wait_running()
        job_id = held.job.id
    if shape.queued:
        job_id = client.submit(Language.LUA, "return 1", session_id=session_id).id
    if shape.suspended:
        client.sessions.suspend(S.SessionRef(session_id=session_id))
    hook: E.HookRegistration = client.hooks.register(E.RegisterHookRequest(hook_point="session.created"))
    key = stack.coordinator.auth.keys.create(who.owner, name="matrix")
    ids = {
        "session": session_id,
        "artifact": artifact_id,
        "job": job_id,
        "subscription": subscribe(client, "matrix.nothing.*"),
        "hook": hook.hook_id,
        "key": key.record.id,
    }
    return World(ids, key.secret, client, stack.coordinator.auth.keys.revoke, held)


def _or_code(read: Callable[[], object]) -> object:
    """What `read` answers, or the status code it was refused with (a deleted object's NOT_FOUND)."""
    try:
        return read()
    except grpc.RpcError as exc:
        return exc.code()


def fingerprint(stack: Stack, owner_key: str, world: World) -> dict[str, object]:
    """What the owner sees of the world: every field a refused call could have changed."""
    ids = world.ids
    session_id, scope = ids["session"], f"session:{ids['session']}"
    with grpc.insecure_channel(stack.address) as channel, Redis.from_url(stack.redis_url) as redis:
        owner = Stubs(channel, owner_key)
        md = owner.metadata
        ref = S.SessionRef(session_id=session_id)
        key = A.ArtifactKey(session_id=session_id, artifact_id=ids["artifact"])

        def session() -> object:
            found = owner.sessions.Get(ref, metadata=md)
            fields = dict(found.metadata.fields)
            return found.state, list(found.tags), fields, found.name, found.description, found.updated_at

        def key_valid() -> bool:
            try:
                stack.coordinator.auth.authenticate([("authorization", f"Bearer {world.key_secret}")])
            except Unauthenticated:
                return False
            return True

        hooks = owner.hooks.List(common_pb2.Empty(), metadata=md).hooks
        return {
            "session": _or_code(session),
            "snapshots": sorted(redis.scan_iter(match=snapshot_key(session_id, 0)[:-1] + "*")),
            "children": _or_code(
                lambda: [
                    s.id
                    for s in owner.sessions.List(
                        S.ListSessionsRequest(parent_session_id=session_id), metadata=md
                    ).sessions
                ]  # fmt: skip
            ),
            "replay": _or_code(lambda: str(owner.sessions.GetReplayMetadata(ref, metadata=md).job_count)),
            "artifacts": _or_code(
                lambda: sorted(
                    (a.id, a.version)
                    for a in owner.artifacts.List(A.ListArtifactsRequest(session_id=session_id), metadata=md).artifacts
                )
            ),
            "grants": _or_code(lambda: str(owner.sessions.ListGrants(ref, metadata=md))),
            "permissions": _or_code(lambda: dict(owner.artifacts.GetPermissions(key, metadata=md).grants)),
            "state": _or_code(lambda: str(owner.state.List(ST.StateScope(scope=scope), metadata=md))),
            "k": _or_code(lambda: str(owner.state.Get(ST.StateKey(scope=scope, key="k"), metadata=md))),
            "job": _or_code(lambda: str(owner.jobs.GetJob(J.GetJobRequest(job_id=ids["job"]), metadata=md).status)),
            "jobs": _or_code(
                lambda: sorted(
                    j.id for j in owner.jobs.ListJobs(J.ListJobsRequest(session_id=session_id), metadata=md).jobs
                )
            ),
            "subscribed": _or_code(
                lambda: (
                    owner.events.Receive(E.ReceiveRequest(subscription_id=ids["subscription"]), metadata=md) and True
                )
            ),
            "hook": ids["hook"] in {h.hook_id for h in hooks},
            "key_valid": key_valid(),
        }


class Column(enum.Enum):
    """Who calls: the matrix's columns."""

    OWNER = "owner"
    GRANTEE_READ = "grantee with read"
    GRANTEE_WRITE = "grantee with write"
    GRANTEE_ADMIN = "grantee with admin"
    READ_ONLY = "owner's key with only 'read'"
    SUBMIT_ONLY = "owner's key with only 'submit'"
    STRANGER = "unrelated principal"
    ADMIN_OTHER = "admin key of another principal"
    JOB_OTHER = "job credential of another principal's job"
    ENDED_JOB = "job credential of the owner's ended job"
    EXPIRED = "owner's expired key"
    REVOKED = "owner's revoked key"
    NO_KEY = "no key"
    GARBAGE = "garbage token"


UNAUTHENTICATED_BY = {
    Column.ENDED_JOB: "job credential is not valid (unknown, forged, or its job has ended)",
    Column.EXPIRED: "expired at",
    Column.REVOKED: "was revoked at",
    Column.NO_KEY: "missing credentials",
    Column.GARBAGE: "API key is not valid",
}
"""What each unauthenticated column's refusal says."""

GRANTED = {Column.GRANTEE_READ: "read", Column.GRANTEE_WRITE: "write", Column.GRANTEE_ADMIN: "admin"}
"""Each grantee column's level on the world's session."""

SCOPES = {
    Column.OWNER: frozenset({Scope.SUBMIT, Scope.READ}),
    **dict.fromkeys(GRANTED, frozenset({Scope.SUBMIT, Scope.READ})),
    Column.READ_ONLY: frozenset({Scope.READ}),
    Column.SUBMIT_ONLY: frozenset({Scope.SUBMIT}),
    Column.STRANGER: frozenset({Scope.SUBMIT, Scope.READ}),
    Column.ADMIN_OTHER: ALL_SCOPES,
}
"""The scopes of each client-key column that authenticates."""

OWNERS = (Column.OWNER, Column.READ_ONLY, Column.SUBMIT_ONLY)
"""Columns that act as the objects' owner (the principal's keys with fewer scopes)."""


@dataclass
class Callers:
    owner: str
    tokens: dict[Column, str]
    principals: dict[Column, str] = field(default_factory=dict)


def _ended_job_credential(stack: Stack, redis: Redis, key: str) -> str:
    """The credential of a job that has ended, used while it ran (so it was in the coordinator's cache)."""
    with ScriptpoolClient(stack.address, key) as client:
        ended_job, ended_credential = running_job_credential(client, redis)
        with grpc.insecure_channel(stack.address) as channel:
            ended = Stubs(channel, ended_credential)
            ended.sessions.GetCurrent(common_pb2.Empty(), metadata=ended.metadata)
        release_job(ended_job)
        client.wait(ended_job, timeout=30)
    # (the cache forgets it on the job-finished message, which may come a moment after the record)
    cache, digest = stack.coordinator.auth.job_credentials, credential_hash(ended_credential)
    assert wait_for(lambda: cache.get(digest) is None)
    return ended_credential


@contextmanager
def callers(stack: Stack, redis: Redis) -> Iterator[Callers]:
    """Every column's credential; the job credential's job runs until the context ends."""
    keys = stack.coordinator.auth.keys
    owner, owner_key = stack.new_api_key()
    stranger, stranger_key = stack.new_api_key()
    grantees = {column: stack.new_api_key() for column in GRANTED}
    admin = f"t-admin-{uuid.uuid4().hex[:8]}"
    expiring = keys.create(owner, name="expiring", expires_in=3600)
    redis.hset(apikey_key(digest_of(expiring.secret)), "expires", repr(time.time() - 60))
    revoked = keys.create(owner, name="revoked")
    keys.revoke(revoked.record.id)
    stack.new_api_key(READER)
    ended_credential = _ended_job_credential(stack, redis, owner_key)
    with ScriptpoolClient(stack.address, stranger_key) as client:
        job_id, credential = running_job_credential(client, redis, wall_time_ms=600_000)
        tokens = {
            Column.OWNER: owner_key,
            Column.READ_ONLY: keys.create(owner, scopes=SCOPES[Column.READ_ONLY]).secret,
            Column.SUBMIT_ONLY: keys.create(owner, scopes=SCOPES[Column.SUBMIT_ONLY]).secret,
            Column.STRANGER: stranger_key,
            **{column: grantees[column][1] for column in GRANTED},
            Column.ADMIN_OTHER: keys.create(admin, scopes=ALL_SCOPES).secret,
            Column.JOB_OTHER: credential,
            Column.ENDED_JOB: ended_credential,
            Column.EXPIRED: expiring.secret,
            Column.REVOKED: revoked.secret,
            Column.NO_KEY: "",
            Column.GARBAGE: "not-a-key",
        }
        principals = {column: owner for column in OWNERS}
        principals.update({column: grantees[column][0] for column in GRANTED})
        principals.update({Column.STRANGER: stranger, Column.ADMIN_OTHER: admin, Column.JOB_OTHER: stranger})
        try:
            yield Callers(owner, tokens, principals)
        finally:
            release_job(job_id)
            client.wait(job_id, timeout=30)


def finished_job(stack: Stack, owner_key: str) -> str:
    with ScriptpoolClient(stack.address, owner_key) as client:
        job = client.run(Language.LUA, "return 1", timeout=60)
        assert result_of(job) == 1
        return job.id
