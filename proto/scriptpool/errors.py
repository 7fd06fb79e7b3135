"""The root of every scriptpool error, shared by all layers.

Each error carries a `code` named like a gRPC status code (without importing grpc, so the sandbox
layer can use it). The coordinator maps codes to gRPC statuses in exactly one place
(`scriptpool.coordinator.status`); scripts see the same code on the error value they catch.
"""

from __future__ import annotations


class ScriptpoolError(Exception):
    """Base class. `message` is written for a person and never contains host paths or tracebacks."""

    code: str = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidArgument(ScriptpoolError):
    code = "INVALID_ARGUMENT"


class NotFound(ScriptpoolError):
    code = "NOT_FOUND"


class AlreadyExists(ScriptpoolError):
    code = "ALREADY_EXISTS"


class PermissionDenied(ScriptpoolError):
    code = "PERMISSION_DENIED"


class Unauthenticated(ScriptpoolError):
    code = "UNAUTHENTICATED"


class FailedPrecondition(ScriptpoolError):
    code = "FAILED_PRECONDITION"


class ResourceExhausted(ScriptpoolError):
    code = "RESOURCE_EXHAUSTED"


class Unavailable(ScriptpoolError):
    code = "UNAVAILABLE"


class TlsFailed(Unavailable):
    """The TLS handshake with the coordinator failed: its certificate was refused (expired, signed by
    a CA the client does not trust, for another host name) or it refused ours. Permanent: sending the
    call again does not help, so clients do not."""


class Unimplemented(ScriptpoolError):
    code = "UNIMPLEMENTED"


class DeadlineExceeded(ScriptpoolError):
    code = "DEADLINE_EXCEEDED"


class DataLoss(ScriptpoolError):
    code = "DATA_LOSS"


class Internal(ScriptpoolError):
    code = "INTERNAL"


_BY_CODE: dict[str, type[ScriptpoolError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        Unauthenticated,
        FailedPrecondition,
        ResourceExhausted,
        Unavailable,
        Unimplemented,
        DeadlineExceeded,
        DataLoss,
        Internal,
    )
}


def error_for_code(code: str, message: str) -> ScriptpoolError:
    """Rebuild the typed error for a code that crossed a process boundary."""
    return _BY_CODE.get(code, Internal)(message)
