"""`scriptpool bench`: measured figures, each beside a baseline measured in the same run."""
