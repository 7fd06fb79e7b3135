"""Probes of another principal's artifacts: a principal with no access must get exactly the answer an
artifact (or session) that does not exist gets, and must leave nothing in the owner's audit log.

The victim is a real principal that owns a real session and artifact; every probe is repeated on a
random artifact id in the victim's session and on a random session, and the answers compared with
the ids masked out (same code, same message).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
import pytest
from redis import Redis

from scriptpool.client import ScriptpoolClient
from scriptpool.core.keys import audit_key
from scriptpool.errors import ScriptpoolError
from scriptpool.languages import Language
from scriptpool.v1 import artifacts_pb2
from tests.conftest import Stack
from tests.integration.helpers import assert_worker_healthy, result_of

A = artifacts_pb2


@dataclass(frozen=True)
class Victim:
    principal: str
    session_id: str
    artifact_id: str
    client: ScriptpoolClient


@pytest.fixture
def victim(stack: Stack) -> Iterator[Victim]:
    principal, key = stack.new_api_key()
    with ScriptpoolClient(stack.address, key) as owner:
        session_id = owner.create_session("victim").id
        header = A.StoreArtifactChunk(session_id=session_id, type="text", metadata=A.ArtifactMetadata(name="secret"))
        ref = owner.store_artifact(header, [b"the victim's secret"])
        yield Victim(principal, session_id, ref.id, owner)


Probe = Callable[[ScriptpoolClient, str, str], object]

PROBES: dict[str, Probe] = {
    "get": lambda c, s, a: c.read_artifact(s, a),
    "getContent": lambda c, s, a: list(c.read_artifact_content(s, a)),
    "update": lambda c, s, a: c.store_artifact(A.StoreArtifactChunk(session_id=s, artifact_id=a), [b"pwned"]),
    "delete": lambda c, s, a: c.artifacts.delete(A.ArtifactKey(session_id=s, artifact_id=a)),
    "grant": lambda c, s, a: c.artifacts.grant_permission(
        A.PermissionChange(session_id=s, artifact_id=a, user="mallory", permission="admin")
    ),
    "revoke": lambda c, s, a: c.artifacts.revoke_permission(
        A.PermissionChange(session_id=s, artifact_id=a, user="mallory", permission="read")
    ),
    "getPermissions": lambda c, s, a: c.artifacts.get_permissions(A.ArtifactKey(session_id=s, artifact_id=a)),
    "checkAccess self": lambda c, s, a: c.artifacts.check_access(
        A.CheckAccessRequest(session_id=s, artifact_id=a, permission="read")
    ),
    "checkAccess owner": lambda c, s, a: c.artifacts.check_access(
        A.CheckAccessRequest(session_id=s, artifact_id=a, user="someone", permission="read")
    ),
    "getAuditLog": lambda c, s, a: c.artifacts.get_audit_log(A.GetAuditLogRequest(session_id=s, artifact_id=a)),
    "list": lambda c, s, a: c.artifacts.list(A.ListArtifactsRequest(session_id=s)),
    "query": lambda c, s, a: c.artifacts.query(A.ArtifactQuery(session_id=s)),
    "findByType": lambda c, s, a: c.artifacts.find_by_type(A.FindByTypeRequest(session_id=s, type="text")),
    "findByTag": lambda c, s, a: c.artifacts.find_by_tag(A.FindByTagRequest(session_id=s, tag="x")),
    "search": lambda c, s, a: c.artifacts.search(A.SearchArtifactsRequest(session_id=s, text="secret")),
}


def _answer(probe: Probe, caller: ScriptpoolClient, session_id: str, artifact_id: str) -> tuple[str, str]:
    """(code, message with the ids masked) of a probe that must fail."""
    try:
        probe(caller, session_id, artifact_id)
    except grpc.RpcError as exc:  # a streamed answer's error surfaces while iterating
        return exc.code().name, str(exc.details()).replace(session_id, "<session>").replace(artifact_id, "<artifact>")
    except ScriptpoolError as exc:
        return exc.code, exc.message.replace(session_id, "<session>").replace(artifact_id, "<artifact>")
    raise AssertionError("the probe succeeded")


@pytest.mark.parametrize("op", list(PROBES))
def test_a_strangers_probe_is_answered_as_if_nothing_were_there(
    client: ScriptpoolClient, redis_client: Redis, victim: Victim, op: str
) -> None:
    audit_before = redis_client.xrange(audit_key(victim.artifact_id))
    real = _answer(PROBES[op], client, victim.session_id, victim.artifact_id)
    missing_artifact = _answer(PROBES[op], client, victim.session_id, str(uuid.uuid4()))
    missing_session = _answer(PROBES[op], client, str(uuid.uuid4()), str(uuid.uuid4()))
    assert real[0] == "NOT_FOUND"
    assert real == missing_artifact
    if op not in ("list", "query", "findByType", "findByTag", "search"):  # these name the session only
        assert missing_session[0] == "NOT_FOUND"
    else:
        assert real == missing_session
    assert redis_client.xrange(audit_key(victim.artifact_id)) == audit_before
    info, content = victim.client.read_artifact(victim.session_id, victim.artifact_id)
    assert b"".join(content) == b"the victim's secret" and info.version == 1
    assert victim.client.artifacts.get_permissions(
        A.ArtifactKey(session_id=victim.session_id, artifact_id=victim.artifact_id)
    ).grants == {victim.principal: "admin"}


def test_a_jobs_probe_is_answered_as_if_nothing_were_there(
    client: ScriptpoolClient, redis_client: Redis, victim: Victim
) -> None:
    audit_before = redis_client.xlen(audit_key(victim.artifact_id))
    source = """
    local out = {}
    for _, aid in ipairs({INPUT.aid, INPUT.random}) do
      local ok, e = pcall(Artifact.get, INPUT.sid, aid)
      out[#out + 1] = {e.code, e.message}
      ok, e = pcall(Artifact.getAuditLog, INPUT.sid, aid)
      out[#out + 1] = {e.code, e.message}
    end
    local ok, e = pcall(Artifact.list, INPUT.sid)
    out[#out + 1] = {e.code, e.message}
    return out
    """
    random_id = str(uuid.uuid4())
    inputs = {"sid": victim.session_id, "aid": victim.artifact_id, "random": random_id}
    out = result_of(client.run(Language.LUA, source, inputs=inputs, timeout=60))
    assert isinstance(out, list)
    masked = []
    for pair in out:
        assert isinstance(pair, list)
        code, message = str(pair[0]), str(pair[1])
        masked.append((code, message.replace(victim.artifact_id, "<artifact>").replace(random_id, "<artifact>")))
    assert masked[:2] == masked[2:4] and {code for code, _ in masked} == {"NOT_FOUND"}
    assert redis_client.xlen(audit_key(victim.artifact_id)) == audit_before
    assert_worker_healthy(client)
