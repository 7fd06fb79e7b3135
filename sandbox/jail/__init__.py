"""The OS layer under every engine, applied inside the job's child process before any script code.

Layers: an empty environment, inherited descriptors closed, a fresh network namespace, a private
scratch directory, rlimits, no-new-privs, Landlock, no capabilities, and a seccomp filter. Each layer
reports whether it was applied; a layer the host cannot provide is reported, never silently skipped
(see `JailReport`, the worker's startup log and `scriptpool doctor`). See docs/THREAT_MODEL.md.
"""

from scriptpool.sandbox.jail._apply import (
    JailReport,
    apply_jail,
    become_cleaning_parent,
    child_exited,
    cpu_limit_seconds,
    lock_down_spare,
    prepare_forking_process,
    prepare_spare,
    release_scratch,
    scratch_dir_of,
    scratch_is_empty,
)
from scriptpool.sandbox.jail._probe import probe_host
from scriptpool.sandbox.jail._scratch import DEFAULT_SCRATCH_ROOT
from scriptpool.sandbox.jail._scratch import base as scratch_base
from scriptpool.sandbox.jail._scratch import use_base as use_scratch_base
from scriptpool.sandbox.jail.policy import ALLOW_MISSING_VARIABLE, LAYERS, JailIncomplete, JailPolicy, require_jail

__all__ = [
    "ALLOW_MISSING_VARIABLE",
    "DEFAULT_SCRATCH_ROOT",
    "LAYERS",
    "JailIncomplete",
    "JailPolicy",
    "JailReport",
    "apply_jail",
    "become_cleaning_parent",
    "child_exited",
    "cpu_limit_seconds",
    "lock_down_spare",
    "prepare_forking_process",
    "prepare_spare",
    "probe_host",
    "require_jail",
    "release_scratch",
    "scratch_base",
    "scratch_dir_of",
    "scratch_is_empty",
    "use_scratch_base",
]
