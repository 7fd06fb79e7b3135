"""`NumericCaller` answers exactly as wasmtime-py's `Func.__call__`: values, traps, host-import
exceptions and argument errors; and quickjs-rs's guest calls go through it."""

from __future__ import annotations

import math
from typing import Any

import pytest
import wasmtime

from scriptpool.sandbox.engines import javascript, quickjs_internals
from scriptpool.sandbox.engines.wasmtime_internals import NumericCaller

WAT = """
(module
  (import "host" "boom" (func $boom))
  (func (export "add_i32") (param i32 i32) (result i32) local.get 0 local.get 1 i32.add)
  (func (export "mul_i64") (param i64 i64) (result i64) local.get 0 local.get 1 i64.mul)
  (func (export "half_f64") (param f64) (result f64) local.get 0 f64.const 0.5 f64.mul)
  (func (export "widen_f32") (param f32) (result f32) local.get 0)
  (func (export "pair") (param i32) (result i32 f64) local.get 0 local.get 0 f64.convert_i32_s)
  (func (export "nothing"))
  (func (export "trap") (result i32) unreachable)
  (func $recurse (export "recurse") (param i32) (result i32) local.get 0 call $recurse)
  (func (export "calls_host") call $boom)
  (func (export "ref") (param externref) (result externref) local.get 0)
)
"""


class _HostError(Exception):
    pass


def _instance() -> tuple[wasmtime.Store, dict[str, Any]]:
    engine = wasmtime.Engine()
    store = wasmtime.Store(engine)
    module = wasmtime.Module(engine, WAT)

    def boom() -> None:
        raise _HostError("from the host")

    host = wasmtime.Func(store, wasmtime.FuncType([], []), boom)
    exports = wasmtime.Instance(store, module, [host]).exports(store)
    return store, {name: exports[name] for name in ("add_i32", "mul_i64", "half_f64", "widen_f32", "pair",
                                                    "nothing", "trap", "recurse", "calls_host", "ref")}  # fmt: skip


CASES: list[tuple[str, tuple[Any, ...]]] = [
    ("add_i32", (2, 40)),
    ("add_i32", (2**31 - 1, 1)),  # wraps, as wasm does
    ("add_i32", (-5, 3)),
    ("mul_i64", (2**40, 3)),
    ("half_f64", (3.0,)),
    ("half_f64", (math.inf,)),
    ("widen_f32", (0.1,)),
    ("pair", (7,)),
    ("nothing", ()),
]


@pytest.mark.parametrize(("name", "args"), CASES)
def test_numbers_come_back_as_from_wasmtime_py(name: str, args: tuple[Any, ...]) -> None:
    store, funcs = _instance()
    caller = NumericCaller()
    for _ in range(2):  # the signature is read on the first call, then remembered
        assert caller.call(name, funcs[name], store, args) == funcs[name](store, *args)


def test_nan_comes_back_as_nan() -> None:
    store, funcs = _instance()
    assert math.isnan(NumericCaller().call("half_f64", funcs["half_f64"], store, (math.nan,)))


@pytest.mark.parametrize(
    ("name", "args"),
    [("add_i32", (1,)), ("add_i32", (1, 2, 3)), ("add_i32", (1.5, 2)), ("half_f64", (3,)), ("add_i32", ("1", 2))],
)
def test_bad_arguments_get_wasmtime_pys_own_error(name: str, args: tuple[Any, ...]) -> None:
    store, funcs = _instance()
    with pytest.raises(Exception) as theirs:
        funcs[name](store, *args)
    with pytest.raises(type(theirs.value)):
        NumericCaller().call(name, funcs[name], store, args)


def test_a_reference_typed_function_takes_wasmtime_pys_path() -> None:
    store, funcs = _instance()
    caller = NumericCaller()
    assert caller.signature("ref", funcs["ref"], store) is None
    assert caller.call("ref", funcs["ref"], store, ("kept",)) == "kept"


def test_traps_and_host_exceptions_surface_as_from_wasmtime_py() -> None:
    store, funcs = _instance()
    caller = NumericCaller()
    with pytest.raises(wasmtime.Trap) as trap:
        caller.call("trap", funcs["trap"], store, ())
    assert trap.value.trap_code == wasmtime.TrapCode.UNREACHABLE
    with pytest.raises(wasmtime.Trap) as overflow:
        caller.call("recurse", funcs["recurse"], store, (1,))
    assert overflow.value.trap_code == wasmtime.TrapCode.STACK_OVERFLOW
    with pytest.raises(_HostError, match="from the host"):
        caller.call("calls_host", funcs["calls_host"], store, ())
    assert caller.call("add_i32", funcs["add_i32"], store, (1, 1)) == 2  # the store is still usable


def test_quickjs_rs_calls_its_guest_through_it() -> None:
    javascript.install_engine()
    assert quickjs_internals.guest_call_method() is not quickjs_internals.QUICKJS_RS_CALL
    assert quickjs_internals.guest_call_method().__qualname__.endswith("call_guest")
    assert quickjs_internals.QUICKJS_RS_CALL.__qualname__ == "_Instance.c"  # the method it stands in for
    guest = javascript._Guest(16 * 1024 * 1024)
    try:
        guest.budget.start(1000)
        assert guest.eval("[1, 'two', 3.5]").to_python() == [1, "two", 3.5]
    finally:
        guest.close()
