"""A failed gRPC call as the matching ScriptpoolError: what clients and workers raise instead of a
raw `grpc.RpcError` (the other direction, error to status, is the coordinator's `coordinator/status.py`)."""

from __future__ import annotations

import grpc

from scriptpool.errors import ScriptpoolError, TlsFailed, Unavailable, error_for_code
from scriptpool.tls import tls_failure_reason

PLAINTEXT_HINT = (
    "if the coordinator serves TLS, dial it with TLS and its CA (--tls-ca, SCRIPTPOOL_TLS_CA), and with a client "
    "certificate if it requires them"
)


def from_rpc_error(exc: grpc.RpcError) -> ScriptpoolError:
    """`exc` (a call's error, or anything with the same `code()`/`details()`) as a ScriptpoolError:
    UNAVAILABLE and DEADLINE_EXCEEDED (the coordinator did not answer in time) are `Unavailable`,
    other codes their own class, and an error with no status (the channel broke) `Unavailable`.
    A failed TLS handshake is `TlsFailed` (an `Unavailable`) saying why; a connection the
    coordinator closed at once (what a TLS-only coordinator does to plaintext) says TLS may be why."""
    code_of = getattr(exc, "code", None)
    details_of = getattr(exc, "details", None)
    code = code_of() if callable(code_of) else None
    details = (details_of() if callable(details_of) else None) or str(exc)
    if not isinstance(code, grpc.StatusCode):
        return Unavailable(f"coordinator call failed: {details}")
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        reason = tls_failure_reason(details)
        if reason is not None:
            return TlsFailed(f"TLS with the coordinator failed: {reason} ({details})")
        if "Socket closed" in details or "Connection reset" in details:
            return Unavailable(f"coordinator unavailable: {details} ({PLAINTEXT_HINT})")
        return Unavailable(f"coordinator unavailable: {details}")
    return error_for_code(code.name, details)
