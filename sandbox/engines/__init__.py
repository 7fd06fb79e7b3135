"""Script engines. Each module implements `scriptpool.sandbox.runner.Runner` for one language."""
