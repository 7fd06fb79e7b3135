"""The client SDK lives in the shared package: `scriptpool.client` (kept importable here while the
code base moves to it)."""

from scriptpool.client import ScriptpoolClient, job_request, new_idempotency_key

__all__ = ["ScriptpoolClient", "job_request", "new_idempotency_key"]
