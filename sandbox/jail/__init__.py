"""The OS layer under every engine, applied inside the job's child process before any script code.

Each layer reports whether it was applied; a layer the host cannot provide is reported, never
silently skipped (see `JailReport` and `scriptpool doctor`).
"""

from sandbox.jail._apply import JailReport, apply_jail, probe_host

__all__ = ["JailReport", "apply_jail", "probe_host"]
