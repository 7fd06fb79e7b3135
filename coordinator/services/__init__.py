"""gRPC servicers. Each is thin: authenticate, call a store, return the message."""
