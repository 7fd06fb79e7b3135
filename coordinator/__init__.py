"""The coordinator: gRPC services over Redis (sessions, jobs, auth), the client, the CLI on top."""
