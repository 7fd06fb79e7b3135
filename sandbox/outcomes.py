"""The ways a job can end: defined in the shared core (`scriptpool.outcomes`), named here for the
sandbox's own modules."""

from scriptpool.outcomes import Outcome

__all__ = ["Outcome"]
