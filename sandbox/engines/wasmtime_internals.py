"""Numeric calls into a wasm function without wasmtime-py's per-call type work.

wasmtime-py's `Func.__call__` asks wasmtime for the function's type on every call, builds `ValType`
objects for each parameter and result, compares them, and wraps every value in a `Val`: ~30 µs of
Python per call, against ~3 µs for the call itself. quickjs-rs talks to its guest only through such
calls (allocate, write, evaluate, read back, free: ~45 for a trivial job, ~10 more to set up its
instance), so that Python was most of a JavaScript job's CPU.

`NumericCaller` reads a function's signature once (a function's type never changes, and every
instance of the one guest module has the same exports) and, when every parameter and result is a
number, fills wasmtime's raw value array directly and calls `wasmtime_func_call` inside
wasmtime-py's own trap handling (`enter_wasm`), so a trap or an exception raised by a host import
surfaces exactly as from `Func.__call__`. Anything else (a reference type, a value of the wrong
Python type, a wrong argument count) goes to `Func.__call__`, which raises its own errors.
`tests/unit/test_wasmtime_internals.py` compares the two.
"""

from __future__ import annotations

from ctypes import byref
from typing import Any

import wasmtime
from wasmtime import _ffi as ffi
from wasmtime._func import enter_wasm

_FIELDS = {
    ffi.WASMTIME_I32.value: ("i32", int),
    ffi.WASMTIME_I64.value: ("i64", int),
    ffi.WASMTIME_F32.value: ("f32", float),
    ffi.WASMTIME_F64.value: ("f64", float),
}
"""wasmtime's value kinds for numbers -> the raw union's field and the Python type it holds."""


class _Signature:
    __slots__ = ("params", "results")

    def __init__(self, params: tuple[tuple[int, str, type], ...], results: tuple[tuple[int, str, type], ...]) -> None:
        self.params = params
        self.results = results


def _numeric(kinds: list[wasmtime.ValType]) -> tuple[tuple[int, str, type], ...] | None:
    found = []
    for kind in kinds:
        code = int(ffi.wasm_valtype_kind(kind.ptr()))
        if code not in _FIELDS:
            return None
        found.append((code, *_FIELDS[code]))
    return tuple(found)


class NumericCaller:
    """Calls functions by a name that stands for the same signature wherever it is used (one
    module's exports)."""

    def __init__(self) -> None:
        self._signatures: dict[str, _Signature | None] = {}

    def signature(self, name: str, func: wasmtime.Func, store: wasmtime.Store) -> _Signature | None:
        if name not in self._signatures:
            ty = func.type(store)
            params, results = _numeric(ty.params), _numeric(ty.results)
            self._signatures[name] = None if params is None or results is None else _Signature(params, results)
        return self._signatures[name]

    def call(self, name: str, func: wasmtime.Func, store: wasmtime.Store, args: tuple[Any, ...]) -> Any:
        sig = self.signature(name, func, store)
        if sig is None or len(args) != len(sig.params):
            return func(store, *args)
        params = (ffi.wasmtime_val_t * len(args))()
        for raw, (code, field, python_type), value in zip(params, sig.params, args, strict=True):
            if type(value) is not python_type:  # bool, a float for an int...: wasmtime-py decides
                return func(store, *args)
            raw.kind = code
            setattr(raw.of, field, value)
        results = (ffi.wasmtime_val_t * len(sig.results))()
        with enter_wasm(store) as trap:
            error = ffi.wasmtime_func_call(
                store._context(), byref(func._func), params, len(args), results, len(sig.results), trap
            )
            if error:
                raise wasmtime.WasmtimeError._from_ptr(error)
        if not sig.results:
            return None
        values = [getattr(raw.of, field) for raw, (_, field, _) in zip(results, sig.results, strict=True)]
        return values[0] if len(values) == 1 else values


__all__ = ["NumericCaller"]
