"""Large artifacts against a coordinator *subprocess*: bounded memory while streaming, and a crash in
the middle of a store leaves nothing half-written."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from redis import Redis

from scriptpool.client import ScriptpoolClient
from scriptpool.errors import ScriptpoolError
from scriptpool.v1 import artifacts_pb2
from tests.conftest import CLI, Stack, stop_process, wait_for

A = artifacts_pb2
CHUNK = 256 * 1024


@dataclass
class Coordinator:
    proc: subprocess.Popen[bytes]
    address: str

    def rss_kib(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0


@pytest.fixture
def coordinator(stack: Stack, tmp_path: object) -> Iterator[Coordinator]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"127.0.0.1:{port}"
    proc = subprocess.Popen(
        [*CLI, "coordinator", "--redis-url", stack.redis_url,
         "--listen", address],
        env={**os.environ, "SCRIPTPOOL_MAX_ARTIFACT_BYTES": str(256 * 1024 * 1024)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, process_group=0,
    )  # fmt: skip
    try:
        _, key = stack.new_api_key()
        with ScriptpoolClient(address, key) as probe_client:
            assert wait_for(lambda: _answers(probe_client), timeout=20)
        yield Coordinator(proc, address)
    finally:
        stop_process(proc)


def _answers(client: ScriptpoolClient) -> bool:
    try:
        client.list_sessions()
    except ScriptpoolError:
        return False
    return True


def pieces(total: int, seed: bytes) -> Iterator[bytes]:
    """Deterministic, incompressible-ish content generated piece by piece (never held whole)."""
    block = hashlib.sha256(seed).digest() * (CHUNK // 32)
    for index in range(total // CHUNK):
        yield index.to_bytes(8, "big") + block[8:]


def digest_of(total: int, seed: bytes) -> str:
    h = hashlib.sha256()
    for piece in pieces(total, seed):
        h.update(piece)
    return h.hexdigest()


@pytest.mark.slow
def test_streaming_200_mb_both_ways_keeps_coordinator_memory_bounded(
    coordinator: Coordinator, stack: Stack, redis_client: Redis
) -> None:
    total = 200 * 1024 * 1024
    _, key = stack.new_api_key()
    peak = [coordinator.rss_kib()]
    baseline = peak[0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], coordinator.rss_kib())
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        with ScriptpoolClient(coordinator.address, key) as client:
            session_id = client.create_session("big").id
            header = A.StoreArtifactChunk(session_id=session_id, type="binary", metadata=A.ArtifactMetadata(name="big"))
            ref = client.store_artifact(header, pieces(total, b"big"))
            assert ref.content_hash == digest_of(total, b"big")
            info, chunks = client.read_artifact(session_id, ref.id)
            h, size = hashlib.sha256(), 0
            for chunk in chunks:
                h.update(chunk)
                size += len(chunk)
            assert (info.size, size, h.hexdigest()) == (total, total, ref.content_hash)
            client.artifacts.delete(A.ArtifactKey(session_id=session_id, artifact_id=ref.id))
    finally:
        done.set()
        sampler.join()
    growth_mib = (peak[0] - baseline) / 1024
    print(f"coordinator RSS: baseline {baseline / 1024:.0f} MiB, peak {peak[0] / 1024:.0f} MiB while streaming 200 MiB")
    assert peak[0] / 1024 < 100, f"coordinator RSS peaked at {peak[0] / 1024:.0f} MiB"
    assert growth_mib < 40
    assert not redis_client.exists(f"sp:blob:{ref.content_hash}")


def _kill_mid_store(coordinator: Coordinator, key: str, redis_client: Redis, header: A.StoreArtifactChunk) -> str:
    """Stream 16 MiB of a 64 MiB artifact, SIGKILL the coordinator once it is in Redis, then try the rest."""
    before = set(redis_client.scan_iter("sp:upload:*"))
    killed = threading.Event()
    errors: list[ScriptpoolError] = []

    def held_back() -> Iterator[bytes]:
        for index, piece in enumerate(pieces(64 * 1024 * 1024, b"crash")):
            if index == 64:
                killed.wait(30)  # the rest only after the kill: the store is certainly cut off mid-way
            yield piece

    def send() -> None:
        with ScriptpoolClient(coordinator.address, key) as client:
            try:
                client.store_artifact(header, held_back(), timeout=60)
            except ScriptpoolError as exc:
                errors.append(exc)

    sender = threading.Thread(target=send)
    sender.start()
    assert wait_for(lambda: len(set(redis_client.scan_iter("sp:upload:*")) - before) >= 64, timeout=20)
    os.killpg(coordinator.proc.pid, signal.SIGKILL)
    coordinator.proc.wait()
    killed.set()
    sender.join(timeout=30)
    assert errors and errors[0].code == "UNAVAILABLE"
    return digest_of(64 * 1024 * 1024, b"crash")


def test_a_coordinator_killed_mid_store_leaves_the_old_artifact_whole(
    coordinator: Coordinator, redis_client: Redis, client: ScriptpoolClient, principal_and_key: tuple[str, str]
) -> None:
    session_id = client.create_session("crash").id
    old = client.store_artifact(
        A.StoreArtifactChunk(session_id=session_id, type="text", metadata=A.ArtifactMetadata(name="doc")), [b"v1"]
    )
    shared_refs = redis_client.hget(f"sp:blob:{old.content_hash}", "refs")
    uploads_before = set(redis_client.scan_iter("sp:upload:*"))
    update = A.StoreArtifactChunk(session_id=session_id, artifact_id=old.id)
    sha = _kill_mid_store(coordinator, principal_and_key[1], redis_client, update)
    # Nothing of the new version is visible: the artifact is still version 1 and whole.
    info, chunks = client.read_artifact(session_id, old.id)
    assert (info.version, b"".join(chunks)) == (1, b"v1")
    listed = client.artifacts.list(A.ListArtifactsRequest(session_id=session_id)).artifacts
    assert [(a.id, a.version) for a in listed] == [(old.id, 1)]
    assert redis_client.hget(f"sp:blob:{old.content_hash}", "refs") == shared_refs
    assert not redis_client.exists(f"sp:blob:{sha}")
    assert not redis_client.exists(f"sp:artifact:{old.id}:v:2")
    charged = int(redis_client.hget(f"sp:artifact:{old.id}:v:1", "charged") or 0)  # content, metadata, records
    assert int(redis_client.get(f"sp:session:{session_id}:artifact-bytes") or 0) == charged > 2
    # The partial upload is left only under upload keys that expire on their own.
    leftovers = set(redis_client.scan_iter("sp:upload:*")) - uploads_before
    assert leftovers and all(0 < redis_client.ttl(k) <= 3600 for k in leftovers)
    redis_client.delete(*leftovers)
    # A fresh store of the same name still works and becomes version 2.
    new = client.store_artifact(A.StoreArtifactChunk(session_id=session_id, artifact_id=old.id), [b"v2"])
    assert new.version == 2
