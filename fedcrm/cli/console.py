"""Rich consoles and progress bars shared by the commands."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

__all__ = ["err_console", "out_console", "progress_reporter"]

out_console = Console()
err_console = Console(stderr=True)

ProgressCallback = Callable[[str, int, int], None]


@contextmanager
def progress_reporter(title: str) -> Iterator[ProgressCallback]:
    """A ``progress(stage, done, total)`` callback drawing one bar per stage."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
        disable=not err_console.is_terminal,
    ) as progress:
        tasks: dict[str, int] = {}

        def report(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(f"{title}: {stage}", total=total)
            progress.update(tasks[stage], completed=done, total=total)

        yield report
