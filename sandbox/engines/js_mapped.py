"""Load the QuickJS guest's compiled code from a file mapping instead of compiling it in-process.

Compiling the guest with Cranelift leaves ~30 MB of compiler heap behind in the process that did it,
and every fork of that process copies the page tables for it. The zygote instead compiles in a
throwaway child, which writes the serialized code to a file in a private (0700) directory; the
zygote maps that file (`Module.deserialize_file`), unlinks it and keeps only the mapping. File-backed
pages are shared with the children and cost fork almost nothing. The file is written by our own
child a moment before and never outlives the load, so no other process's file is ever executed.

This reaches into quickjs-rs's artifact cache (through engines/quickjs_internals.py); on any
failure the caller falls back to the ordinary in-process `prewarm()`.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import wasmtime

from scriptpool.sandbox.engines import javascript
from scriptpool.sandbox.engines import quickjs_internals as qjs

_CHILD_FAILED = 1


def _compile_in_child(engine: wasmtime.Engine, wasm: bytes, path: str) -> None:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the throwaway compiler child always _exits
        code = _CHILD_FAILED
        try:
            with open(path, "wb") as out:
                out.write(wasmtime.Module(engine, wasm).serialize())
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"compiling the JavaScript guest in a child failed (status {status})")


def prewarm_mapped() -> None:
    """Compile the guest in a child, map its code from a private file, then warm up like `prewarm()`.

    Must run before anything has built the QuickJS artifact in this process (a single-threaded one:
    it forks).
    """
    engine = javascript.install_engine()
    if qjs.guest_compiled():
        raise RuntimeError("the JavaScript guest is already compiled in this process")
    wasm = qjs.guest_wasm()
    directory = tempfile.mkdtemp(prefix="scriptpool-js-")
    try:
        path = os.path.join(directory, "quickjs.cwasm")
        _compile_in_child(engine, wasm, path)
        module = wasmtime.Module.deserialize_file(engine, path)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    qjs.share_compiled_guest(engine, module, wasm)
    javascript.prewarm()


__all__ = ["prewarm_mapped"]
