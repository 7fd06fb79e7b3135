"""Artifact bounds beyond content size: versions per artifact, artifacts per session and per
principal, metadata and index entries charged against the byte quotas, and a job's own
`artifact_bytes` limit counting metadata. Each at its edge: at the bound ok, one past refused, and
nothing written in Redis by the refused call."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import pytest
from redis import Redis

from scriptpool.client import ScriptpoolClient
from scriptpool.coordinator.server import start_coordinator
from scriptpool.coordinator.stores.artifacts import RECORD_BYTES
from scriptpool.errors import ResourceExhausted
from scriptpool.v1 import artifacts_pb2
from scriptpool.values import from_value
from tests.conftest import Stack

from .helpers import outcome, run_lua
from .test_artifacts import store

A = artifacts_pb2


@contextmanager
def coordinator(stack: Stack, redis: Redis, key: str, **overrides: object) -> Iterator[ScriptpoolClient]:
    running = start_coordinator(replace(stack.settings, **overrides), redis)  # type: ignore[arg-type]
    try:
        with ScriptpoolClient(f"127.0.0.1:{running.port}", key) as client:
            yield client
    finally:
        running.stop(grace=1)


def _int(redis: Redis, key: str) -> int:
    return int(redis.get(key) or 0)


def _charged(redis: Redis, artifact_id: str) -> int:
    latest = _int_field(redis, f"sp:artifact:{artifact_id}", "latest")
    return sum(_int_field(redis, f"sp:artifact:{artifact_id}:v:{v}", "charged") for v in range(1, latest + 1))


def _int_field(redis: Redis, key: str, field: str) -> int:
    return int(redis.hget(key, field) or 0)


def test_versions_per_artifact_stop_at_the_bound(
    stack: Stack, redis_client: Redis, principal_and_key: tuple[str, str]
) -> None:
    with coordinator(stack, redis_client, principal_and_key[1], max_artifact_versions=3) as client:
        session_id = client.create_session("versions").id
        refs = [store(client, session_id, b"v%d" % i, "doc") for i in range(3)]
        assert [r.version for r in refs] == [1, 2, 3]
        used = _int(redis_client, f"sp:session:{session_id}:artifact-bytes")
        keys = sorted(redis_client.scan_iter(f"sp:artifact:{refs[0].id}*"))
        with pytest.raises(ResourceExhausted, match=r"has 3 versions, the most one artifact may have \(3\)"):
            store(client, session_id, b"v3", "doc")
        update = A.StoreArtifactChunk(session_id=session_id, artifact_id=refs[0].id)
        with pytest.raises(ResourceExhausted, match="3 versions"):
            client.store_artifact(update, [b"v3"])
        assert _int_field(redis_client, f"sp:artifact:{refs[0].id}", "latest") == 3
        assert sorted(redis_client.scan_iter(f"sp:artifact:{refs[0].id}*")) == keys
        assert _int(redis_client, f"sp:session:{session_id}:artifact-bytes") == used
        assert list(redis_client.scan_iter("sp:upload:*")) == []
        assert store(client, session_id, b"other", "doc2").version == 1  # other artifacts are unaffected


def test_metadata_and_index_entries_count_against_the_quota(
    stack: Stack, redis_client: Redis, principal_and_key: tuple[str, str]
) -> None:
    """Empty content with a large description used to be free: 301 versions, +19 MiB of Redis."""
    principal = principal_and_key[0]
    description = "word%d " * 500 % tuple(range(500))  # ~4 KiB and 500 index words
    with coordinator(stack, redis_client, principal_and_key[1], max_session_artifact_bytes=100_000) as client:
        session_id = client.create_session("metadata").id
        stored = 0
        with pytest.raises(ResourceExhausted, match="bytes of artifacts .content, metadata and index."):
            for _ in range(100):
                store(client, session_id, b"", "empty", description=description)
                stored += 1
        assert 2 <= stored < 20
        artifact_id = client.artifacts.list(A.ListArtifactsRequest(session_id=session_id)).artifacts[0].id
        charged = _charged(redis_client, artifact_id)
        assert _int_field(redis_client, f"sp:artifact:{artifact_id}", "latest") == stored
        assert charged > stored * (len(description) + RECORD_BYTES)
        assert _int(redis_client, f"sp:session:{session_id}:artifact-bytes") == charged <= 100_000
        before = _int(redis_client, f"sp:principal:{principal}:artifact-bytes")
        client.artifacts.delete(A.ArtifactKey(session_id=session_id, artifact_id=artifact_id))
        assert _int(redis_client, f"sp:session:{session_id}:artifact-bytes") == 0
        assert _int(redis_client, f"sp:principal:{principal}:artifact-bytes") == before - charged


def test_artifacts_per_session_and_per_principal_stop_at_the_bound(
    stack: Stack, redis_client: Redis, principal_and_key: tuple[str, str]
) -> None:
    principal = principal_and_key[0]
    held = _int(redis_client, f"sp:principal:{principal}:artifact-count")
    limits = {"max_session_artifacts": 2, "max_principal_artifacts": held + 3}
    with coordinator(stack, redis_client, principal_and_key[1], **limits) as client:
        first, second = client.create_session("one").id, client.create_session("two").id
        a = store(client, first, b"a", "a")
        store(client, first, b"b", "b")
        with pytest.raises(ResourceExhausted, match=r"holds 2 artifacts, its limit \(2\)"):
            store(client, first, b"c", "c")
        assert store(client, first, b"a2", "a").version == 2  # a new version is not a new artifact
        assert redis_client.zcard(f"sp:session:{first}:artifacts") == 2
        store(client, second, b"d", "d")
        assert _int(redis_client, f"sp:principal:{principal}:artifact-count") == held + 3
        with pytest.raises(ResourceExhausted, match=rf"this principal holds {held + 3} artifacts"):
            store(client, second, b"e", "e")
        assert redis_client.zcard(f"sp:session:{second}:artifacts") == 1
        client.artifacts.delete(A.ArtifactKey(session_id=first, artifact_id=a.id))
        assert _int(redis_client, f"sp:principal:{principal}:artifact-count") == held + 2
        assert store(client, second, b"e", "e").version == 1


def test_a_jobs_artifact_bytes_limit_counts_metadata(client: ScriptpoolClient, redis_client: Redis) -> None:
    """A job limited to 1 KiB of artifacts stored 301 metadata-only versions: now its metadata counts."""
    source = """
    local stored, code = 0, nil
    for i = 1, 300 do
      local ok, err = pcall(Artifact.store, '', {content = '', type = 'data',
                                                metadata = {name = 'm', description = string.rep('d', 300)}})
      if not ok then code = err.code break end
      stored = stored + 1
    end
    return {stored, code}
    """
    session_id = client.create_session("job-metadata").id
    job = run_lua(client, source, session_id=session_id, limits={"artifact_bytes": 1024})
    assert outcome(job).name == "OK", job.result.message
    assert from_value(job.result.result) == [2, "RESOURCE_EXHAUSTED"]  # ~350 bytes each, ids included
    ids = list(redis_client.zrange(f"sp:session:{session_id}:artifacts", 0, -1))
    assert len(ids) == 1 and _int_field(redis_client, f"sp:artifact:{ids[0].decode()}", "latest") == 2  # type: ignore[union-attr]
