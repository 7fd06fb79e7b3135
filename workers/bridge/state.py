"""The script-side State.* operations: script values in, StateService calls out.

Registered into the bridge's handler table by workers/bridge/host.py. Shorter forms use the job's current
session (`session:current`): `get(key)`, `set(key, value)`, `delete(key)`, `list()`,
`increment(key [, by])`, `compareAndSet(key, expected, new)`. `session:current` is resolved here,
because a job's current session lives in its bridge (`Session.setCurrent`). Setting nil deletes.
"""

from __future__ import annotations

from scriptpool.errors import FailedPrecondition, InvalidArgument
from scriptpool.v1 import state_pb2
from scriptpool.values import PlainValue, from_value, to_value
from scriptpool.workers.bridge.args import kind, string_arg
from scriptpool.workers.bridge.calls import BridgeCalls, Handlers

CURRENT = "session:current"


def _scope(bridge: BridgeCalls, value: PlainValue, op: str) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(f"{op}: scope must be a string (global, session:current, session:<id> or job)")
    if value != CURRENT:
        return value
    if not bridge.current_session:
        raise FailedPrecondition(
            f"{op}: scope 'session:current': this job has no current session; "
            "call Session.setCurrent(id) or name the session as session:<id>"
        )
    return f"session:{bridge.current_session}"


def _key(value: PlainValue, op: str) -> str:
    if value is None:
        raise InvalidArgument(f"{op}: a key is required")
    return string_arg(value, f"{op}: key")


def _split(bridge: BridgeCalls, args: list[PlainValue], op: str, values: int) -> tuple[str, str, list[PlainValue]]:
    """(scope, key, the values): `values` more arguments after the key, and with a scope in front
    when there are more than `values + 1` arguments."""
    if len(args) > values + 1:
        return _scope(bridge, args[0], op), _key(args[1], op), args[2 : 2 + values]
    padded = [*args, *([None] * (values + 1 - len(args)))]
    return _scope(bridge, CURRENT, op), _key(padded[0], op), padded[1:]


def _get(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    scope, key, _ = _split(bridge, args, op, 0)
    answer: state_pb2.StateValue = bridge.unary(bridge.state.Get, state_pb2.StateKey(scope=scope, key=key))
    return from_value(answer.value)


def _set(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    scope, key, (value,) = _split(bridge, args, op, 1)
    request = state_pb2.SetStateRequest(scope=scope, key=key, value=to_value(value))
    bridge.unary(bridge.state.Set, request)
    return None


def _delete(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    scope, key, _ = _split(bridge, args, op, 0)
    answer: state_pb2.StateValue = bridge.unary(bridge.state.Delete, state_pb2.StateKey(scope=scope, key=key))
    return answer.found


def _list(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    scope = _scope(bridge, args[0] if args and args[0] is not None else CURRENT, op)
    answer: state_pb2.StateKeys = bridge.unary(bridge.state.List, state_pb2.StateScope(scope=scope))
    return list(answer.keys)


def _increment(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    # increment(scope, key [, by]) or increment(key [, by]): a second argument that is a number is `by`.
    by: PlainValue
    if len(args) == 2 and isinstance(args[1], (int, float)) and not isinstance(args[1], bool):
        scope, key, by = _scope(bridge, CURRENT, op), _key(args[0], op), args[1]
    elif len(args) <= 1:
        scope, key, by = _scope(bridge, CURRENT, op), _key(args[0] if args else None, op), None
    else:
        scope, key, by = _scope(bridge, args[0], op), _key(args[1], op), args[2] if len(args) > 2 else None
    if by is not None and (not isinstance(by, (int, float)) or isinstance(by, bool)):
        raise InvalidArgument(f"{op}: by must be a number, got {kind(by)}")
    request = state_pb2.IncrementStateRequest(scope=scope, key=key)
    if by is not None:
        request.by.CopyFrom(to_value(by))
    answer: state_pb2.StateValue = bridge.unary(bridge.state.Increment, request)
    return from_value(answer.value)


def _compare_and_set(bridge: BridgeCalls, op: str, args: list[PlainValue]) -> PlainValue:
    scope, key, (expected, new) = _split(bridge, args, op, 2)
    request = state_pb2.CompareAndSetRequest(scope=scope, key=key, expected=to_value(expected), new_value=to_value(new))
    answer: state_pb2.CompareAndSetResponse = bridge.unary(bridge.state.CompareAndSet, request)
    return answer.swapped


HANDLERS: Handlers = {
    "State.get": _get,
    "State.set": _set,
    "State.delete": _delete,
    "State.list": _list,
    "State.increment": _increment,
    "State.compareAndSet": _compare_and_set,
}
