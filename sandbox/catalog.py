"""The script globals and their operations: the one list every engine and the bridge build from.

Names are the spec's camelCase; `snake_aliases` adds the rs-llmspell snake_case spellings that
semantics.md asks for. Operations taking callbacks (Hook.register, Event.on) are listed too: an
engine runs the callback locally and only the registration crosses the wire.
"""

from __future__ import annotations

import re

GLOBAL_OPS: dict[str, tuple[str, ...]] = {
    "Session": (
        "create",
        "get",
        "list",
        "getCurrent",
        "setCurrent",
        "suspend",
        "resume",
        "complete",
        "delete",
        "getMetadata",
        "updateMetadata",
        "getTags",
        "setTags",
        "save",
        "load",
        "saveAll",
        "restoreRecent",
        "canReplay",
        "replay",
        "getTimeline",
        "getReplayMetadata",
    ),
    "Artifact": (
        "store",
        "get",
        "getContent",
        "list",
        "delete",
        "update",
        "query",
        "findByType",
        "findByTag",
        "search",
        "storeFile",
        "saveToFile",
        "grantPermission",
        "revokePermission",
        "getPermissions",
        "checkAccess",
        "getAuditLog",
    ),
    "State": ("get", "set", "delete", "list", "increment", "compareAndSet"),
    "Hook": ("register", "unregister", "list"),
    "Event": ("emit", "on", "subscribe", "receive", "unsubscribe", "listSubscriptions", "getStats"),
}

HOOK_POINTS = (
    "session.created",
    "session.state_changed",
    "session.suspended",
    "session.resumed",
    "session.completed",
    "session.deleted",
    "session.saved",
    "session.loaded",
    "artifact.stored",
    "artifact.updated",
    "artifact.deleted",
    "artifact.accessed",
    "state.changed",
    "job.started",
    "job.finished",
)
"""scriptpool's lifecycle hook points (semantics.md); each fires as the event of the same name, which
only the coordinator emits (a script's or client's emit of one of them, or of a name in their
namespaces, `RESERVED_EVENT_PREFIXES`, is refused)."""

RS_HOOK_POINTS = (
    "SystemStartup",
    "SystemShutdown",
    "BeforeAgentInit",
    "AfterAgentInit",
    "BeforeAgentExecution",
    "AfterAgentExecution",
    "BeforeAgentShutdown",
    "AfterAgentShutdown",
    "AgentError",
    "BeforeToolDiscovery",
    "AfterToolDiscovery",
    "BeforeToolExecution",
    "AfterToolExecution",
    "ToolValidation",
    "ToolError",
    "BeforeWorkflowStart",
    "WorkflowStageTransition",
    "BeforeWorkflowStage",
    "AfterWorkflowStage",
    "WorkflowCheckpoint",
    "WorkflowRollback",
    "AfterWorkflowComplete",
    "WorkflowError",
)
"""rs-llmspell's hook points (the 23 its Lua binding accepts), accepted by `Hook.register` as custom
points: each fires when a script or a client emits an event of exactly that name."""

RESERVED_EVENT_PREFIXES = ("session.", "artifact.", "job.")
"""Event namespaces only the coordinator emits into (with `state.changed` and every HOOK_POINTS name)."""


def reserved_event_name(name: str) -> str | None:
    """The reserved namespace `name` falls in (e.g. "session.*"), or None if a script or client may
    emit it."""
    if name in HOOK_POINTS and not name.startswith(RESERVED_EVENT_PREFIXES):
        return name
    for prefix in RESERVED_EVENT_PREFIXES:
        if name.startswith(prefix):
            return prefix + "*"
    return None


HOOK_PRIORITIES = {
    "highest": -(2**31),
    "high": -100,
    "normal": 0,
    "low": 100,
    "lowest": 2**31 - 1,
}
"""rs-llmspell's priority levels: lower runs first, so "highest" runs first."""

FILE_OPS = ("open", "read", "write", "seek", "flush", "close", "readAll", "writeAll", "remove", "rename", "exists",
            "list")  # fmt: skip
"""The job's own files (`File.<op>`, sandbox/scratch_files.py): performed in the sandbox child, inside
the job's scratch directory; engines build `io`/`open`/`fs` on them. They never reach the worker and
are not counted as global calls (they are local system calls, bounded by the job's CPU and wall time
and the scratch bounds)."""
FILE_OP_PREFIX = "File."

PAGED_OPS = frozenset({"Session.list", "Session.getTimeline", "Artifact.list", "Artifact.query",
                       "Artifact.findByType", "Artifact.findByTag", "Artifact.search"})  # fmt: skip
"""Operations that answer a page, `{items, next_cursor}` across the bridge: each engine gives the
script the items as its list with `next_cursor` on it, to pass back as `cursor` (issue 16)."""

SCRIPT_OPS = frozenset(f"{name}.{op}" for name, ops in GLOBAL_OPS.items() for op in ops)
"""Every operation's full name, e.g. "Session.get"."""

# Older spellings that mean another operation of the same global.
EXTRA_ALIASES: dict[str, dict[str, str]] = {
    "State": {"save": "set", "load": "get", "list_keys": "list"},
    "Event": {"publish": "emit"},
}

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])([A-Z])")


def snake_case(name: str) -> str:
    return _CAMEL_BOUNDARY.sub(r"_\1", name).lower()


def aliases(global_name: str) -> dict[str, str]:
    """Every extra spelling of a global's operations, mapped to the canonical operation name."""
    found = {snake_case(op): op for op in GLOBAL_OPS[global_name] if snake_case(op) != op}
    found.update(EXTRA_ALIASES.get(global_name, {}))
    return found


def canonical_op(global_name: str, name: str) -> str | None:
    if name in GLOBAL_OPS.get(global_name, ()):
        return name
    return aliases(global_name).get(name) if global_name in GLOBAL_OPS else None
