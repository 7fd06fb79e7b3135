"""The script languages: defined in the shared core (`scriptpool.languages`), named here for the
sandbox's own modules."""

from scriptpool.languages import Language

__all__ = ["Language"]
