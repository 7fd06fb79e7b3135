"""The bridge: a job's global calls (Session, Artifact, State, Hook, Event), from the sandbox child's
frames to gRPC calls to the coordinator with the job's credential. `host.CoordinatorBridge` is the
job's end; each global's handlers live in a module of their own and use only `calls.BridgeCalls`."""
