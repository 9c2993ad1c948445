"""Benchmark `fedcrm generate`: a synthetic chain of about a million transactions.

    python -m benchmarks.bench_generate [--transactions 1000000] [--stores 8] [--format parquet]
    python -m benchmarks.bench_generate --render-only

A small pilot chain measures transactions per customer for the seed; the measured run is
then sized to about ``--transactions`` lines and generated (and written) into a temporary
directory. Reports wall time, transactions and rows per second, peak resident memory
(``ru_maxrss``; the memory in use before the run is reported beside it) and size on disk.
Writes ``benchmarks/results/generate.json``, ``generate.md`` and ``generate.png``
(``--render-only``: only the last two, from the JSON already there).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from benchmarks import reporting
from fedcrm.data.store import TableFormat
from fedcrm.synthetic.chain import ChainParams, generate_chain

NAME = "generate"
RESULTS, MARKDOWN, PLOT = reporting.paths(NAME)
PILOT_CUSTOMERS_PER_STORE = 300


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _size_mb(root: Path) -> float:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 1e6


def size_chain(transactions: int, stores: int, seed: int, workdir: Path) -> tuple[int, float]:
    """Customers per store giving about ``transactions`` lines, and the pilot's lines/customer."""
    pilot = generate_chain(
        workdir / "pilot",
        ChainParams(stores=stores, customers_per_store=PILOT_CUSTOMERS_PER_STORE, seed=seed),
    )
    per_customer = pilot.transactions / sum(s.customers for s in pilot.stores)
    return max(1, round(transactions / (per_customer * stores))), per_customer


def run(
    transactions: int, stores: int, seed: int, fmt: TableFormat, workdir: Path
) -> dict[str, object]:
    customers_per_store, per_customer = size_chain(transactions, stores, seed, workdir)
    params = ChainParams(stores=stores, customers_per_store=customers_per_store, seed=seed, fmt=fmt)
    finished: list[float] = []
    rss_before = _rss_mb()
    started = time.perf_counter()
    summary = generate_chain(
        workdir / "chain",
        params,
        progress=lambda stage, done, total: finished.append(time.perf_counter() - started),
    )
    seconds = time.perf_counter() - started
    peak = _rss_mb()
    return {
        "benchmark": "generate",
        "target_transactions": transactions,
        "stores": stores,
        "customers_per_store": customers_per_store,
        "customers": sum(s.customers for s in summary.stores),
        "transactions": summary.transactions,
        "total_rows": summary.total_rows,
        "rows_by_table": {
            "customers": sum(s.customers for s in summary.stores),
            "transactions": summary.transactions,
            "interactions": sum(s.interactions for s in summary.stores),
            "consents": sum(s.consent_events for s in summary.stores),
        },
        "format": fmt,
        "seed": seed,
        "seconds": round(seconds, 2),
        "seconds_in_stores": round(finished[-1] - finished[0], 2) if finished else None,
        "transactions_per_second": round(summary.transactions / seconds),
        "rows_per_second": round(summary.total_rows / seconds),
        "peak_rss_mb": round(peak, 1),
        "rss_before_mb": round(rss_before, 1),
        "output_mb": round(_size_mb(summary.path), 1),
        "pilot_transactions_per_customer": round(per_customer, 2),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "cpus": os.cpu_count(),
    }


def _phases(result: dict[str, Any]) -> dict[str, float]:
    """The generator's wall seconds split at its first and last store's progress report."""
    total = float(result["seconds"])
    in_stores = result.get("seconds_in_stores")
    if in_stores is None:
        return {"generate_chain": total}
    return {
        "the stores (generate + write)": float(in_stores),
        "outside the stores": max(0.0, total - float(in_stores)),
    }


def markdown(result: dict[str, Any]) -> str:
    """The Markdown report of a ``generate`` result."""
    rows = result["rows_by_table"]
    total_rows = result["total_rows"]
    bytes_per_row = result["output_mb"] * 1e6 / total_rows
    growth = result["peak_rss_mb"] - result["rss_before_mb"]
    lines = [
        "# Generating a synthetic chain",
        "",
        reporting.run_header(result, "benchmarks.bench_generate"),
        "",
        f"`generate_chain`: {result['stores']} stores x {result['customers_per_store']:,} "
        f"customers (sized from a pilot chain's {result['pilot_transactions_per_customer']} "
        f"transactions per customer to about {result['target_transactions']:,} transactions), "
        f"{result['format']}, seed {result['seed']}; Python {result['python']}, numpy "
        f"{result['numpy']}, pandas {result['pandas']}.",
        "",
        *reporting.table(
            ["measure", "value"],
            [
                ("wall seconds (generate and write)", reporting.fmt(result["seconds"])),
                ("— generating and writing the stores", reporting.fmt(result["seconds_in_stores"])),
                ("transactions per second", reporting.fmt(result["transactions_per_second"])),
                ("rows per second (all tables)", reporting.fmt(result["rows_per_second"])),
                ("peak RSS MB (`ru_maxrss`)", reporting.fmt(result["peak_rss_mb"], 1)),
                ("RSS MB before the run", reporting.fmt(result["rss_before_mb"], 1)),
                ("size on disk MB", reporting.fmt(result["output_mb"], 1)),
                ("bytes on disk per row", reporting.fmt(bytes_per_row, 1)),
            ],
        ),
        "",
        *reporting.table(
            ["table", "rows", "share of rows"],
            [
                (name, reporting.fmt(count), reporting.pct(count / total_rows))
                for name, count in rows.items()
            ]
            + [("**all**", reporting.fmt(total_rows), "100.0%")],
        ),
        "",
        "## Findings",
        "",
        f"- {result['transactions']:,} transactions ({total_rows:,} rows in all tables) in "
        f"{result['seconds']} s: {result['transactions_per_second']:,} transactions/s, "
        f"{result['rows_per_second']:,} rows/s on one process.",
        f"- Peak resident memory {result['peak_rss_mb']} MB, {growth:.0f} MB above the "
        f"{result['rss_before_mb']} MB in use before the run (`ru_maxrss` is the process's "
        "peak, so the pilot chain's generation counts in the baseline).",
        f"- {result['output_mb']} MB on disk ({result['format']}), {bytes_per_row:.0f} bytes "
        "per row.",
        "",
    ]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    """Rows per table, the wall-time split and the memory of a ``generate`` result."""
    figure = reporting.new_figure(14, 4.2)
    ax_rows, ax_time, ax_mem = figure.subplots(1, 3)
    rows = result["rows_by_table"]
    bars = ax_rows.bar(list(rows), list(rows.values()), color="tab:blue")
    reporting.label_bars(ax_rows, bars, [f"{v:,}" for v in rows.values()])
    ax_rows.set(ylabel="rows", title=f"Rows per table ({result['total_rows']:,} in all)")
    ax_rows.margins(y=0.15)

    phases = _phases(result)
    bars = ax_time.bar(list(phases), list(phases.values()), color=["tab:green", "tab:gray"])
    reporting.label_bars(ax_time, bars, [f"{v:.2f} s" for v in phases.values()])
    ax_time.set(
        ylabel="seconds",
        title=f"Wall time: {result['seconds']} s, {result['rows_per_second']:,} rows/s",
    )
    ax_time.tick_params(axis="x", labelsize=8)
    ax_time.margins(y=0.15)

    memory = {"RSS before the run": result["rss_before_mb"], "peak RSS": result["peak_rss_mb"]}
    bars = ax_mem.bar(list(memory), list(memory.values()), color=["tab:gray", "tab:red"])
    reporting.label_bars(ax_mem, bars, [f"{v:.0f} MB" for v in memory.values()])
    ax_mem.set(ylabel="MB (ru_maxrss)", title=f"Memory; {result['output_mb']} MB on disk")
    ax_mem.margins(y=0.15)
    figure.suptitle(
        f"fedcrm generate: {result['stores']} stores x {result['customers_per_store']:,} "
        f"customers, {result['transactions']:,} transactions ({result['format']}); "
        f"{result['cpus']} CPUs",
        fontsize=10,
    )
    reporting.save_figure(figure, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transactions", type=int, default=1_000_000)
    parser.add_argument("--stores", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--format", choices=("parquet", "csv"), default="parquet")
    parser.add_argument(
        "--render-only", action="store_true", help="Re-render the .md and .png from the JSON."
    )
    args = parser.parse_args()
    if args.render_only:
        reporting.render_existing(NAME, markdown, plot)
        return
    with (
        reporting.RunInfo("benchmarks.bench_generate") as info,
        tempfile.TemporaryDirectory(prefix="fedcrm-bench-generate-") as tmp,
    ):
        fmt = cast(TableFormat, args.format)
        result = run(args.transactions, args.stores, args.seed, fmt, Path(tmp))
    result["run"] = info.summary()
    reporting.write_report(NAME, result, markdown, plot)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
