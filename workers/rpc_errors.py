"""Turn a grpc.RpcError from the coordinator into the matching ScriptpoolError.

Nothing above this module sees a raw grpc.RpcError.
"""

from __future__ import annotations

import grpc

from scriptpool.errors import ScriptpoolError, Unavailable, error_for_code
from scriptpool.workers.call_stream import StreamedCallError


def from_rpc_error(exc: grpc.RpcError) -> ScriptpoolError:
    has_status = isinstance(exc, (grpc.Call, StreamedCallError))
    code = exc.code() if has_status else None
    details = (exc.details() if has_status else None) or str(exc)
    if code is None:
        return Unavailable(f"coordinator call failed: {details}")
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return Unavailable(f"coordinator unavailable: {details}")
    return error_for_code(code.name, details)
