"""Rich consoles and progress bars shared by the commands."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

__all__ = [
    "RoundProgress",
    "err_console",
    "out_console",
    "progress_reporter",
    "round_progress",
    "round_text",
]

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


def round_text(record: Mapping[str, Any]) -> str:
    """``AUC 0.871 · loss 0.412`` (churn) or ``recall@k 0.52 · loss 3.1`` (preference) from a
    round record (aggregate numbers only)."""
    evaluate, loss = record.get("evaluate") or {}, record.get("loss")
    name, key = (
        ("recall@k", "recall_at_k") if record.get("task") == "preference" else ("AUC", "auc")
    )
    value = evaluate.get(key)
    parts = [f"{name} {value:.3f}" if isinstance(value, int | float) else f"{name} –"]
    if isinstance(loss, int | float):
        parts.append(f"loss {loss:.3f}")
    return " · ".join(parts)


class RoundProgress:
    """Live federated-training display: call it as ``on_round(round, total, record)``; use
    :meth:`phase` as ``on_phase(text)`` for what follows the rounds (a spinner line)."""

    def __init__(self, progress: Progress, total: int, title: str) -> None:
        self._progress = progress
        first = progress.add_task(title, total=total, count=f"0/{total}", info="")
        self._tasks: dict[str, TaskID] = {"churn": first}  # one bar per model of the run
        self._phase: TaskID | None = None

    def __call__(self, server_round: int, total: int, record: Mapping[str, Any]) -> None:
        task = str(record.get("task", "churn"))
        if task not in self._tasks:  # a further model of the run gets its own bar
            self._tasks[task] = self._progress.add_task(
                f"{task} model", total=total, count=f"0/{total}", info=""
            )
        self._progress.update(
            self._tasks[task],
            completed=server_round,
            total=total,
            count=f"{server_round}/{total}",
            info=round_text(record),
        )

    def phase(self, text: str) -> None:
        """Start a new phase line (the previous one is marked done)."""
        self.close_phase()
        self._phase = self._progress.add_task(f"{text}…", total=None, count="", info="")

    def close_phase(self) -> None:
        if self._phase is not None:
            self._progress.update(self._phase, total=1, completed=1)
            self._phase = None


@contextmanager
def round_progress(
    total: int, title: str, *, console: Console | None = None
) -> Iterator[RoundProgress]:
    """A rich progress bar of ``total`` federated rounds with live metrics, on stderr.

    ``with round_progress(n, "training") as progress: run_federation(..., on_round=progress,
    on_phase=progress.phase)``. Drawn only when the console is a terminal.
    """
    console = console or err_console
    with Progress(
        SpinnerColumn(finished_text="[green]✓"),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[count]}"),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
    ) as progress:
        reporter = RoundProgress(progress, total, title)
        try:
            yield reporter
        finally:
            reporter.close_phase()
