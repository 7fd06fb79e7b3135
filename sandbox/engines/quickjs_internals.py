"""Every use scriptpool makes of quickjs-rs beyond its public API (`Runtime`, `Context`,
`Context.register`, `Context.eval`), in one module.

For measured reasons (docs/PERFORMANCE.md) the JavaScript engine (`engines/javascript.py`) and the
zygote's mapped guest code (`engines/js_mapped.py`) reach into quickjs-rs's private `_engine` and
`_wasmtime` modules: every guest call goes through our numeric fast path (`route_guest_calls`),
every instance is built on our wasmtime engine (`share_engine`), a new instance's heap is copied
from a template (the instance, its stack pointer and the context's host-function registry), our
CPU budget replaces its wall-clock interrupt handler, and the guest's compiled code can come from a
file mapping (`share_compiled_guest`). Nothing else in the project touches a quickjs-rs name that
starts with `_` (`tests/unit/test_private_api_pins.py` checks it); quickjs-rs is pinned and an
upgrade fails that test until this module has been read against the new version.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import quickjs_rs
import quickjs_rs._engine as _qjs_engine
import quickjs_rs._wasmtime as _qjs_wasmtime
import wasmtime

JSError = _qjs_engine.JSError
"""A JavaScript exception (or QuickJS's own error, out of memory say) as quickjs-rs raises it."""
MarshalError = _qjs_engine.MarshalError
"""A value quickjs-rs could not carry between Python and JavaScript."""
ARTIFACT_KEY = "quickjs"
"""quickjs-rs's key for its compiled guest in the shared artifact cache."""
QUICKJS_RS_CALL = _qjs_engine._Instance.c
"""quickjs-rs's own way into its guest (every host-to-guest call), replaced by `route_guest_calls`."""

GuestCall = Callable[[str, Any, wasmtime.Store, tuple[Any, ...]], Any]
"""(export name, the wasm function, its store, the arguments) -> the call's result."""


def route_guest_calls(call: GuestCall) -> Callable[..., Any]:
    """Make every call quickjs-rs makes into its guest (`_Instance.c`: the function export `name`,
    with the instance published for the host imports the call may re-enter) go through `call`.
    Returns the method installed."""
    current = _qjs_engine._CUR

    def call_guest(instance: Any, name: str, *args: Any) -> Any:
        fn = instance._exports[name]
        previous = getattr(current, "inst", None)
        current.inst = instance
        try:
            return call(name, fn, instance.store, args)
        finally:
            current.inst = previous

    _qjs_engine._Instance.c = call_guest  # type: ignore[method-assign, assignment]
    return call_guest


def guest_call_method() -> Callable[..., Any]:
    """The method quickjs-rs calls its guest through now."""
    method: Callable[..., Any] = _qjs_engine._Instance.c
    return method


def share_engine(engine: wasmtime.Engine) -> None:
    """Make quickjs-rs build every instance on `engine`. Refused once quickjs-rs made its own."""
    with _qjs_wasmtime._SHARED_ENGINE_LOCK:
        if _qjs_wasmtime._SHARED_ENGINE is not None:
            raise RuntimeError("quickjs-rs already created its wasmtime engine; import scriptpool.sandbox first")
        _qjs_wasmtime._SHARED_ENGINE = engine


def compile_guest() -> None:
    """Compile (or find compiled) quickjs-rs's guest module in this process."""
    _qjs_engine._quickjs_artifact()


def guest_compiled() -> bool:
    return ARTIFACT_KEY in _qjs_wasmtime._SHARED_ARTIFACTS


def guest_wasm() -> bytes:
    """The guest module's WebAssembly, as shipped in quickjs-rs."""
    wasm: bytes = _qjs_engine._read_guest_wasm()
    return wasm


def share_compiled_guest(engine: wasmtime.Engine, module: wasmtime.Module, wasm: bytes) -> None:
    """Make `module` (the guest compiled from `wasm`, on `engine`) the one quickjs-rs instantiates."""
    with _qjs_wasmtime._SHARED_ARTIFACTS_LOCK:
        _qjs_wasmtime._SHARED_ARTIFACTS[ARTIFACT_KEY] = _qjs_wasmtime.SharedWasmArtifact(
            module=module,
            linker=_qjs_engine._build_shared_linker(engine),
            build_id=hashlib.sha256(wasm).digest(),
        )


# --- one instance --------------------------------------------------------------------------------


def engine_context(context: quickjs_rs.Context) -> Any:
    """The context's engine side: `eval_handle`, promise state and results, pending jobs."""
    return context._engine_ctx


def instance(engine_ctx: Any) -> Any:
    """The context's wasm instance: its store, memory, stack pointer, `c(name, ...)` and name tables."""
    return engine_ctx._inst


def set_interrupt_handler(runtime: quickjs_rs.Runtime, handler: Callable[[], bool]) -> None:
    """Replace quickjs-rs's wall-clock interrupt handler with `handler` (true stops the script)."""
    runtime._engine_rt.set_interrupt_handler(handler)


def last_host_exception(context: quickjs_rs.Context) -> BaseException | None:
    """The Python exception a host function raised during the last call, if any."""
    exc: BaseException | None = context._last_host_exception
    return exc


def rebind_host_functions(context: quickjs_rs.Context, guest: Any, host_functions: dict[str, Any]) -> None:
    """What `Context.register` does on the Python side, for functions the heap already names: a
    restored heap's host functions (QuickJS finds them by name) call `host_functions`."""
    for name, fn in host_functions.items():
        fn_id = context._next_fn_id
        context._next_fn_id += 1
        context._host_registry[fn_id] = fn
        guest.name_to_fn_id[name] = fn_id
        guest.async_names.discard(name)


__all__ = [
    "ARTIFACT_KEY",
    "QUICKJS_RS_CALL",
    "GuestCall",
    "JSError",
    "MarshalError",
    "compile_guest",
    "engine_context",
    "guest_call_method",
    "guest_compiled",
    "guest_wasm",
    "instance",
    "last_host_exception",
    "rebind_host_functions",
    "route_guest_calls",
    "set_interrupt_handler",
    "share_compiled_guest",
    "share_engine",
]
