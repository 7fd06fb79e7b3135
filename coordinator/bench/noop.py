"""The baseline job for plain RQ: a function that does nothing."""


def noop() -> None:
    return None
