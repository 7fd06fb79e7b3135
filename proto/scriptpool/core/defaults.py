"""Defaults the coordinator and the workers share, each defined once."""

from __future__ import annotations

DEFAULT_COORDINATOR = "127.0.0.1:50051"
"""host:port the workers' global calls go to, and the coordinator listens on, unless configured."""

DEFAULT_QUEUE = "scriptpool"
"""The RQ queue jobs are enqueued on and workers take them from (SCRIPTPOOL_QUEUE)."""

__all__ = ["DEFAULT_COORDINATOR", "DEFAULT_QUEUE"]
