"""The wire contract: generated protobuf/gRPC code under `scriptpool.v1`, plus the two helpers every
layer shares: the error root (`scriptpool.errors`) and value marshalling (`scriptpool.values`)."""

__version__ = "0.1.0"
