"""Defaults the coordinator, the workers and the client share, each defined once here.

This module imports nothing (the client SDK imports it: tests/unit/test_client_surface.py), and
tests/unit/test_shared_defaults.py fails if a value here is defined again elsewhere."""

from __future__ import annotations

DEFAULT_COORDINATOR = "127.0.0.1:50051"
"""host:port the workers' global calls go to, and the coordinator listens on, unless configured."""

DEFAULT_QUEUE = "scriptpool"
"""The RQ queue jobs are enqueued on and workers take them from (SCRIPTPOOL_QUEUE)."""

LEASE_SECONDS = 15.0
"""A running job's lease: a worker renews it, the coordinator ends the job as worker_lost once it
expires (SCRIPTPOOL_LEASE_SECONDS, read by workers and coordinator alike)."""

RESULT_TTL_SECONDS = 7 * 24 * 3600
"""How long a finished job's record stays in Redis."""

ARTIFACT_CHUNK_BYTES = 256 * 1024
"""Artifact content travels in pieces of at most this size (the client's and the worker's uploads,
the coordinator's downloads) and is stored in Redis in chunks of exactly this size (`sp:blob:*`;
changing it changes how stored content is split, so it is part of the Redis data format)."""

__all__ = ["ARTIFACT_CHUNK_BYTES", "DEFAULT_COORDINATOR", "DEFAULT_QUEUE", "LEASE_SECONDS", "RESULT_TTL_SECONDS"]
