"""The script-side Hook.* operations: `register(point, fn)` and `unregister(id)`.

A hook is a subscription to its point's lifecycle events: `Hook.register` arrives here without its
function (the engine keeps it and runs it after later calls, see docs/architecture.md#events), so
only the subscription crosses the wire and its id is the hook id.
"""

from __future__ import annotations

from scriptpool.errors import InvalidArgument
from scriptpool.sandbox.catalog import HOOK_POINTS
from scriptpool.values import PlainValue
from scriptpool.workers.bridge import events
from scriptpool.workers.bridge.args import string_arg
from scriptpool.workers.bridge.calls import BridgeCalls, Handlers


def _register_hook(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    """The wire half of `Hook.register(point, fn)` (the engine keeps `fn`): a subscription to the
    hook point's events; its id is the hook id."""
    point = string_arg(args[0] if args else None, f"{op}: hook point")
    if point not in HOOK_POINTS:
        raise InvalidArgument(f"{op}: unknown hook point {point[:60]!r}; one of: {', '.join(HOOK_POINTS)}")
    return events.subscribe(bridge, op, [point])


HANDLERS: Handlers = {
    "Hook.register": _register_hook,
    "Hook.unregister": events.unsubscribe,
}

__all__ = ["HANDLERS"]
