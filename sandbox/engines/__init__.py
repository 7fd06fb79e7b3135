"""Script engines. Each module implements `sandbox.runner.Runner` for one language."""
