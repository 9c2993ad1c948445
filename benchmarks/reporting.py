"""Shared output of the benchmarks: ``<name>.json``, ``<name>.md`` and ``<name>.png``.

Every file goes to ``benchmarks/results/`` through a temporary file in the same directory and
an ``os.replace``, so a reader never sees half a report. A benchmark calls
:func:`write_report` with its result and its own ``markdown(result)`` and
``plot(result, path)``; ``--render-only`` calls :func:`render_existing`, which re-renders the
Markdown and the plot from the JSON already on disk. :class:`RunInfo` records how a run went
(command, seconds, the 1-minute load average during it) and :func:`run_header` states it in
the report, in the words of ``bench_scale`` and ``bench_cost``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from benchmarks.bench_scale import LoadMonitor

RESULTS_DIR = Path(__file__).resolve().parent / "results"

Markdown = Callable[[dict[str, Any]], str]
Plot = Callable[[dict[str, Any], Path], None]


def paths(name: str, results_dir: Path = RESULTS_DIR) -> tuple[Path, Path, Path]:
    """The JSON, Markdown and PNG paths of benchmark ``name``."""
    base = results_dir / name
    return base.with_suffix(".json"), base.with_suffix(".md"), base.with_suffix(".png")


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    """``write`` a temporary file beside ``path``, then rename it onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""

    def write(tmp: Path) -> None:
        tmp.write_text(text, encoding="utf-8")

    _atomic(path, write)


def new_figure(width: float, height: float) -> Figure:
    """An empty figure on matplotlib's Agg canvas (no display, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Figure, path: Path) -> None:
    """Save ``figure`` as a PNG at ``path`` atomically."""
    _atomic(path, lambda tmp: figure.savefig(tmp, dpi=100, format="png"))


def write_json(name: str, result: dict[str, Any], *, ensure_ascii: bool = True) -> Path:
    """Write ``result`` to ``<name>.json``; its path."""
    json_path, _, _ = paths(name)
    text = json.dumps(result, indent=2, ensure_ascii=ensure_ascii) + "\n"
    write_text(json_path, text)
    return json_path


def write_report(
    name: str,
    result: dict[str, Any],
    markdown: Markdown,
    plot: Plot,
    *,
    ensure_ascii: bool = True,
) -> Path:
    """Write ``<name>.json``, then ``<name>.md`` and ``<name>.png``; the Markdown's path.

    The JSON goes first: a fault in the rendering never loses a measured result (fix the
    renderer and use ``--render-only``).
    """
    write_json(name, result, ensure_ascii=ensure_ascii)
    return render(name, result, markdown, plot)


def render(name: str, result: dict[str, Any], markdown: Markdown, plot: Plot) -> Path:
    """Write ``<name>.md`` and ``<name>.png`` of ``result``; the Markdown's path."""
    _, md_path, png_path = paths(name)
    write_text(md_path, markdown(result))
    plot(result, png_path)
    return md_path


def render_existing(name: str, markdown: Markdown, plot: Plot) -> Path:
    """Re-render ``<name>.md`` and ``<name>.png`` from the ``<name>.json`` on disk."""
    json_path, _, _ = paths(name)
    if not json_path.is_file():
        raise SystemExit(f"{json_path}: no result to render; run the benchmark first")
    result: dict[str, Any] = json.loads(json_path.read_text(encoding="utf-8"))
    md_path = render(name, result, markdown, plot)
    print(f"rendered {md_path} and {md_path.with_suffix('.png')} from {json_path}")
    return md_path


class RunInfo:
    """Records a benchmark run: its command line, wall seconds and the load during it."""

    def __init__(self, module: str) -> None:
        self.command = " ".join(["python -m", module, *sys.argv[1:]])
        self._load: LoadMonitor | None = None

    def __enter__(self) -> RunInfo:
        from benchmarks.bench_scale import LoadMonitor

        self._started = time.perf_counter()
        self._load = LoadMonitor().__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._started
        if self._load is not None:
            self._load.__exit__(*exc)

    def summary(self) -> dict[str, Any]:
        """``{command, seconds, finished, load}`` for the result's ``run`` key."""
        return {
            "command": self.command,
            "seconds": round(self.seconds, 1),
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "load": self._load.summary() if self._load is not None else None,
        }


def run_header(result: dict[str, Any], module: str, cpus: int | None = None) -> str:
    """The "how it was run" paragraph: command, seconds, CPUs and the 1-minute load.

    Reads the result's ``run`` key (:meth:`RunInfo.summary`); results written before it
    existed get the module's bare command and say what was not recorded.
    """
    run = result.get("run") or {}
    cpus = cpus or result.get("cpus") or (run.get("load") or {}).get("cpus")
    on = f" on {cpus} CPUs" if cpus else ""
    if run:
        text = f"Written by `{run['command']}` in {run['seconds']:.0f} s{on}."
    else:
        text = (
            f"Written by `python -m {module}`{on} (the command line and the benchmark's total "
            "seconds were not recorded in this JSON)."
        )
    load = run.get("load")
    if load:
        text += (
            f" Load during the run (1-min average): median {load['load1_during_median']}, max "
            f"{load['load1_during_max']} — a shared machine: above {load['cpus']} the CPUs are "
            "oversubscribed and wall times are inflated and noisy."
        )
    else:
        text += (
            " The machine's load was not recorded with this result; the machine is shared, so "
            "wall times may be inflated by other users' work."
        )
    return text


def fmt(value: Any, digits: int = 2, unit: str = "") -> str:
    """A figure for a table: ``—`` for missing, thousands separators for large numbers."""
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int) or (abs(value) >= 1000 and float(value).is_integer()):
        return f"{value:,.0f}{unit}"
    return f"{value:,.{digits}f}{unit}"


def pct(value: float | None, digits: int = 1) -> str:
    """A share as a percentage (``—`` for missing)."""
    return "—" if value is None else f"{100 * value:.{digits}f}%"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], align: str = "") -> list[str]:
    """A Markdown table; ``align`` has one letter per column (``l`` or ``r``, default ``r``
    except for the first column)."""
    align = align or "l" + "r" * (len(headers) - 1)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(rule) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def label_bars(ax: Any, bars: Any, texts: Sequence[str], fontsize: int = 8) -> None:
    """Write ``texts`` on top of (or beside, for horizontal bars) each bar."""
    ax.bar_label(bars, labels=list(texts), fontsize=fontsize, padding=2)
