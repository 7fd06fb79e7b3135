"""Turn a grpc.RpcError from the coordinator into the matching ScriptpoolError (the shared core's
`scriptpool.grpc_errors`; a `StreamedCallError` reads like a unary call's error).

Nothing above this module sees a raw grpc.RpcError.
"""

from scriptpool.grpc_errors import from_rpc_error

__all__ = ["from_rpc_error"]
