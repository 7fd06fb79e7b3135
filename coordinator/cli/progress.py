"""A progress bar for long client work (`bench`), on stderr, only for a person at a terminal.

`steps(names, shown=...)` yields each name in turn; when `shown` (stderr is a TTY and the output is
not JSON), a `rich` progress bar on stderr names the step in progress and how many are done. Off,
it is a plain loop: nothing is written, so a pipe or a program reading `--json` sees only the output.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence


def wanted(*, as_json: bool) -> bool:
    """Show progress? Only to a person: stderr is a terminal and the output is not JSON."""
    return not as_json and sys.stderr.isatty()


def steps(names: Sequence[str], *, shown: bool, what: str = "case") -> Iterator[str]:
    if not shown:
        yield from names
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    # The output stays on stdout (rich would otherwise send prints to its console, here stderr).
    console = Console(stderr=True)
    with Progress(*columns, console=console, transient=True, redirect_stdout=False, redirect_stderr=False) as progress:
        task = progress.add_task(what, total=len(names))
        for name in names:
            progress.update(task, description=f"{what} {name}")
            yield name
            progress.advance(task)
