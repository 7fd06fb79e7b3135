"""The script-side Hook.* operations: `register(point, fn [, priority])`, `unregister(hook)` and
`list([filter])`, plus the engines' internal `Hook.receive`.

A hook is a subscription to its point's events: `Hook.register` arrives here without its function
(the engine keeps it and runs it after later calls, see docs/architecture.md#events), so only the
subscription crosses the wire and its id is the hook id. The points are scriptpool's lifecycle
points (HOOK_POINTS, fired by the coordinator) and rs-llmspell's (RS_HOOK_POINTS, custom points
fired by any event of exactly that name a script or client emits). A priority is a level
("highest", "high", "normal", "low", "lowest") or an integer; lower runs first. The job's hooks are
kept in its event book, which `Hook.list` reads.
"""

from __future__ import annotations

from scriptpool.core.script_times import with_times
from scriptpool.errors import InvalidArgument
from scriptpool.sandbox.catalog import HOOK_POINTS, HOOK_PRIORITIES, RS_HOOK_POINTS
from scriptpool.values import PlainValue, from_value
from scriptpool.workers.bridge import events
from scriptpool.workers.bridge.args import kind, string_arg
from scriptpool.workers.bridge.calls import BridgeCalls, Handlers
from scriptpool.workers.bridge.event_book import HookEntry

HOOK_RECEIVE_OP = "Hook.receive"  # not a script global: the engines fetch a hook's next firing with it
PRIORITY_MIN, PRIORITY_MAX = HOOK_PRIORITIES["highest"], HOOK_PRIORITIES["lowest"]
_LEVELS = {value: level for level, value in HOOK_PRIORITIES.items()}
_ALL_POINTS = frozenset(HOOK_POINTS) | frozenset(RS_HOOK_POINTS)
_FILTER_KEYS = ("hook_point", "priority", "language", "tag")


def priority_value(value: PlainValue, what: str) -> int:
    """A priority as its integer: a level name (any case) or an integer in rs-llmspell's range (i32)."""
    if value is None:
        return HOOK_PRIORITIES["normal"]
    if isinstance(value, str) and value.lower() in HOOK_PRIORITIES:
        return HOOK_PRIORITIES[value.lower()]
    if isinstance(value, int) and not isinstance(value, bool) and PRIORITY_MIN <= value <= PRIORITY_MAX:
        return value
    shown = repr(value)[:40] if isinstance(value, (str, int, float)) and not isinstance(value, bool) else kind(value)
    raise InvalidArgument(
        f"{what} must be one of {', '.join(HOOK_PRIORITIES)} or an integer from {PRIORITY_MIN} to {PRIORITY_MAX}"
        f" (got {shown})"
    )


def priority_level(value: int) -> str:
    """The level name of a priority, or the integer as a string when it is none of the levels."""
    return _LEVELS.get(value, str(value))


def _register_hook(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    """The wire half of `Hook.register(point, fn [, priority])` (the engine keeps `fn`): a
    subscription to the hook point's events; its id is the hook id."""
    point = string_arg(args[0] if args else None, f"{op}: hook point")
    if point not in _ALL_POINTS:
        raise InvalidArgument(
            f"{op}: unknown hook point {point[:60]!r}; one of: {', '.join(HOOK_POINTS)}, "
            f"or an rs-llmspell point: {', '.join(RS_HOOK_POINTS)}"
        )
    priority = priority_value(args[1] if len(args) > 1 else None, f"{op}: priority")
    hook_id = events.subscribe_on_wire(bridge, op, point)
    return _hook_info(bridge, bridge.event_book.add_hook(hook_id, point, priority))


def _hook_info(bridge: BridgeCalls, hook: HookEntry) -> dict[str, PlainValue]:
    language = bridge.event_book.language
    return {
        "hook_id": hook.hook_id,
        "hook_point": hook.point,
        "name": f"{language}_{hook.hook_id}",
        "description": f"{language} hook for {hook.point}",
        "priority": priority_level(hook.priority),
        "priority_value": hook.priority,
        "language": language,
        "tags": ["cross-language", language],
    }


def _unregister_hook(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    """True if the hook was this job's and is now removed, false for anything else (never an error)."""
    value = args[0] if args else None
    if isinstance(value, dict):
        value = value.get("hook_id")
    if not isinstance(value, str) or bridge.event_book.hooks.pop(value, None) is None:
        return False
    events.unsubscribe_on_wire(bridge, value)  # (False if it had expired: it is gone either way)
    return True


def _matches(info: dict[str, PlainValue], wanted: dict[str, PlainValue]) -> bool:
    for key, value in wanted.items():
        if value is None:
            continue
        if key == "priority":
            if info["priority_value"] != priority_value(value, "Hook.list: filter priority"):
                return False
        elif key == "tag":
            if value not in (info["tags"] or []):  # type: ignore[operator]
                return False
        elif info[key] != value:
            return False
    return True


def _list_hooks(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    """The job's hooks in the order they run (highest priority first), optionally filtered by a
    hook point name or a table `{hook_point=, priority=, language=, tag=}`."""
    wanted = args[0] if args else None
    if wanted is None or wanted == []:
        wanted = {}
    elif isinstance(wanted, str):
        wanted = {"hook_point": wanted}
    elif not isinstance(wanted, dict):
        raise InvalidArgument(f"{op}: the filter must be a hook point name or a table/object, got {kind(wanted)}")
    unknown = sorted(set(wanted) - set(_FILTER_KEYS))
    if unknown:
        raise InvalidArgument(f"{op}: unknown filter {unknown[0][:40]!r}; allowed: {', '.join(_FILTER_KEYS)}")
    infos = [_hook_info(bridge, hook) for hook in bridge.event_book.ordered_hooks()]
    return [info for info in infos if _matches(info, wanted)]


def _family(point: str) -> str:
    for family in ("Agent", "Tool", "Workflow"):
        if family in point:
            return family
    return "System"


def _receive_hook(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    """The hook's next firing, without waiting, as the context its callback gets: rs-llmspell's
    fields (point, data, metadata, language, correlation_id, component_id) and scriptpool's
    (hook_id, hook_point, session_id, job_id, timestamp, artifact_id, old_state, new_state); nil if none."""
    hook_id = args[0] if args else None
    hook = bridge.event_book.hooks.get(hook_id) if isinstance(hook_id, str) else None
    if hook is None:
        return None
    event = events.receive_on_wire(bridge, hook.hook_id, 0)
    if event is None:
        return None
    data = from_value(event.data)
    fields = data if isinstance(data, dict) else {}
    context: dict[str, PlainValue] = {
        "hook_id": hook.hook_id,
        "hook_point": event.name,
        "point": event.name,
        "session_id": event.session_id,
        "job_id": event.job_id,
        "artifact_id": fields.get("artifact_id"),
        "old_state": fields.get("old_state"),
        "new_state": fields.get("new_state"),
        "data": data,
        "metadata": {"event_id": event.id, "session_id": event.session_id, "job_id": event.job_id},
        "language": bridge.event_book.language,
        "correlation_id": event.id,
        "component_id": {"type": _family(event.name), "name": event.job_id or "scriptpool"},
    }
    return with_times(context, timestamp=event.timestamp)


HANDLERS: Handlers = {
    "Hook.register": _register_hook,
    "Hook.unregister": _unregister_hook,
    "Hook.list": _list_hooks,
    HOOK_RECEIVE_OP: _receive_hook,
}

__all__ = ["HANDLERS", "HOOK_RECEIVE_OP", "priority_level", "priority_value"]
