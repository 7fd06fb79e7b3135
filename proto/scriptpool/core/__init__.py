"""The shared core, below both the coordinator and the workers (docs/adr/0009-shared-core.md): the
job-record schema and its scripts, the lean RESP client, the event streams, Redis connection and
durability checks, the RQ drop-ins both sides install, plain-value converters and shared defaults.

It imports none of `scriptpool.coordinator`, `scriptpool.workers` or `scriptpool.sandbox` (an
import-linter contract in pyproject.toml)."""
