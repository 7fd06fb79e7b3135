"""Artifact content in Redis: addressed by SHA-256, stored once, reference counted, read back verified.

  sp:upload:{uuid}:{i}   string  one chunk of an upload in progress; expires after UPLOAD_TTL_SECONDS,
                                 so an upload cut off by a crash leaves nothing behind for long
  sp:blob:{sha256}       hash    size, chunks (how many chunk keys), refs (versions pointing here)
  sp:blob:{sha256}:{i}   string  chunk i of the content, ARTIFACT_CHUNK_BYTES each (the last may be shorter)

Content is written chunk by chunk as it arrives (memory stays bounded by one chunk), under an upload
id because the hash is only known at the end. The commit (artifacts.py, one Lua script) then either
renames the upload chunks to the blob's keys or, when the blob already exists, drops them and adds a
reference: a blob without its `sp:blob:{sha}` hash is never read, so a crash at any point leaves
either the old state or the new one.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator

from redis import Redis

from scriptpool.core.defaults import ARTIFACT_CHUNK_BYTES
from scriptpool.core.keys import blob_key, upload_prefix
from scriptpool.errors import DataLoss, ResourceExhausted

UPLOAD_TTL_SECONDS = 3600


class Upload:
    """Receives content in pieces of any size and writes it to Redis in ARTIFACT_CHUNK_BYTES chunks."""

    def __init__(self, redis: Redis, max_bytes: int, sample_bytes: int = 0) -> None:
        self.redis = redis
        self.max_bytes = max_bytes
        self.sample_bytes = sample_bytes
        self.prefix = upload_prefix(uuid.uuid4().hex)
        self.size = 0
        self.chunks = 0
        self._hash = hashlib.sha256()
        self._pending = bytearray()
        self.text_sample = bytearray()
        """The first `sample_bytes` of the content, for the word index."""

    def write(self, data: bytes) -> None:
        if not data:
            return
        if self.size + len(data) > self.max_bytes:
            self.abort()
            raise ResourceExhausted(
                f"artifact content is larger than the maximum artifact size of {self.max_bytes} bytes"
            )
        self.size += len(data)
        self._hash.update(data)
        if len(self.text_sample) < self.sample_bytes:
            self.text_sample += data[: self.sample_bytes - len(self.text_sample)]
        self._pending += data
        while len(self._pending) >= ARTIFACT_CHUNK_BYTES:
            self._flush(bytes(self._pending[:ARTIFACT_CHUNK_BYTES]))
            del self._pending[:ARTIFACT_CHUNK_BYTES]

    def _flush(self, chunk: bytes) -> None:
        self.redis.set(f"{self.prefix}{self.chunks}", chunk, ex=UPLOAD_TTL_SECONDS)
        self.chunks += 1

    def finish(self) -> str:
        """Write what is left; returns the content's SHA-256 (hex)."""
        if self._pending:
            self._flush(bytes(self._pending))
            self._pending.clear()
        return self._hash.hexdigest()

    def abort(self) -> None:
        keys = [f"{self.prefix}{i}" for i in range(self.chunks)]
        for start in range(0, len(keys), 500):
            self.redis.unlink(*keys[start : start + 500])
        self.chunks = 0
        self._pending.clear()


def read_chunks(redis: Redis, sha: str, on_missing: str) -> Iterator[bytes]:
    """Yield the content of blob `sha` chunk by chunk, re-checking its hash.

    The last chunk is held back until the hash has been checked, so a reader never receives all of
    a corrupt artifact without an error: a mismatch or a missing chunk raises DataLoss.
    """
    count_raw, size_raw = redis.hmget(blob_key(sha), "chunks", "size")
    if not isinstance(count_raw, bytes) or not isinstance(size_raw, bytes):
        raise DataLoss(f"{on_missing}: its content (sha256 {sha}) is missing from the store")
    count, size = int(count_raw), int(size_raw)
    digest = hashlib.sha256()
    seen = 0
    held: bytes | None = None
    for index in range(count):
        chunk = redis.get(f"{blob_key(sha)}:{index}")
        if not isinstance(chunk, bytes):
            raise DataLoss(f"{on_missing}: chunk {index} of its content is missing from the store")
        digest.update(chunk)
        seen += len(chunk)
        if held is not None:
            yield held
        held = chunk
    if seen != size or digest.hexdigest() != sha:
        raise DataLoss(f"{on_missing}: its content does not match its sha256 {sha} (stored data is corrupt)")
    if held is not None:
        yield held
