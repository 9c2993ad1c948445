"""Benchmark `fedcrm import` on a realistic, messy transactions export.

    python -m benchmarks.bench_import [--rows 1000000] [--stores 8]
    python -m benchmarks.bench_import --render-only

A child process writes the CSV (UTF-8 BOM, padded headers, leading-zero customer ids, day-first
``dd/mm/yyyy HH:MM`` dates, ``¥1,234.50``-style amounts, quoted descriptions with commas,
quotes and newlines, about 1% returns with negative quantities); this process then imports it
(hash split, all-granted consent, returns skipped) and reports seconds, rows per second and
peak resident memory (``ru_maxrss``, so the writer's memory is not counted), and the seconds
of each phase the importer reports progress for (read, check, write, validate). Writes
``benchmarks/results/import.json``, ``import.md`` and ``import.png`` (``--render-only``: only
the last two, from the JSON already there).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks import reporting

NAME = "import"
RESULTS, MARKDOWN, PLOT = reporting.paths(NAME)
PHASES = {
    "read": "read the CSV",
    "check": "parse, check and drop invalid rows",
    "write": "write the stores",
    "validate": "validate the stores",
}
OUTSIDE = "outside the phases"  # the split into stores, the output directory's rename
MAPPING = (
    "customer_id=Customer ID,timestamp=Invoice Date,amount=Line Total,quantity=Qty,"
    "category=Category,product_id=SKU,channel=Channel,age_band=Age Band,region=Region,"
    "transaction_id=Line ID"
)
_CATEGORIES = ["food/snacks", "food/dairy", "baby/diapers", "beauty/skincare", "home/kitchen"]
_CHANNELS = ["POS", "App", "Mini Program", "web", " live-stream "]
_AGE_BANDS = ["18-24", "25-34", "35-44", "45-54", "55+", ""]
_REGIONS = ["华北", "华东", "华南", "西南", ""]
_NOTES = ["gift, wrapped", 'said "thanks"', "two\nlines", "plain", ""]


def write_messy_csv(path: Path, rows: int, seed: int = 7) -> None:
    """Write ``rows`` lines of a messy retail export to ``path``."""
    rng = np.random.default_rng(seed)
    customers = max(rows // 10, 1)
    cust = rng.integers(1, customers + 1, rows)
    start = np.datetime64("2023-01-01T00:00")
    minutes = np.sort(rng.integers(0, 2 * 365 * 24 * 60, rows))
    stamps = pd.DatetimeIndex(start + minutes.astype("timedelta64[m]"))
    qty = rng.integers(1, 4, rows)
    returns = rng.random(rows) < 0.01
    qty[returns] = -qty[returns]
    price = np.round(rng.gamma(2.0, 40.0, rows), 2)
    total = np.round(qty * price, 2)
    style = rng.integers(0, 3, rows)
    amounts = np.where(
        style == 0,
        pd.Series(total).map("¥{:,.2f}".format).to_numpy(),
        np.where(style == 1, pd.Series(total).map("{:.2f}".format).to_numpy(), total.astype(str)),
    )
    frame = pd.DataFrame(
        {
            " Line ID ": np.char.add("L", np.arange(1, rows + 1).astype(str)),
            "Customer ID ": np.char.zfill(cust.astype(str), 8),
            " Invoice Date": stamps.strftime("%d/%m/%Y %H:%M"),
            "Line Total": amounts,
            "Qty": qty.astype(str),
            "Category": rng.choice(_CATEGORIES, rows),
            "SKU": np.char.add("0", rng.integers(100, 5000, rows).astype(str)),
            "Channel": rng.choice(_CHANNELS, rows),
            "Age Band": rng.choice(_AGE_BANDS, rows),
            "Region": rng.choice(_REGIONS, rows),
            "Description": rng.choice(_NOTES, rows),
        }
    )
    frame.to_csv(path, index=False, encoding="utf-8-sig")


def run(rows: int, stores: int, workdir: Path) -> dict[str, object]:
    from fedcrm.data.importing import ImportRequest, import_transactions, parse_mapping

    source = workdir / "messy_export.csv"
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.bench_import",
            "--write-only",
            str(source),
            "--rows",
            str(rows),
        ],
        check=True,
    )
    write_seconds = time.perf_counter() - started
    stages: dict[str, float] = {}
    t0 = time.perf_counter()

    def progress(stage: str, done: int, total: int) -> None:
        stages.setdefault(f"{stage}_start", time.perf_counter() - t0)
        if done == total:
            stages[f"{stage}_end"] = time.perf_counter() - t0

    request = ImportRequest(
        source=source,
        mapping=parse_mapping(MAPPING),
        date_format=None,
        store_column=None,
        stores=stores,
        consent="all-granted",
        out=workdir / "stores",
        skip_invalid_rows=True,
    )
    summary = import_transactions(request, progress=progress)
    seconds = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    stage_seconds = {
        name: round(stages[f"{name}_end"] - stages[f"{name}_start"], 3)
        for name in ("read", "check", "write", "validate")
        if f"{name}_end" in stages
    }
    return {
        "benchmark": "import",
        "rows": rows,
        "stores": len(summary.stores),
        "file_mb": round(source.stat().st_size / 1e6, 1),
        "rows_imported": summary.rows_imported,
        "rows_skipped": summary.total_skipped,
        "date_format": summary.date_format,
        "seconds": round(seconds, 2),
        "rows_per_second": round(rows / seconds),
        "stage_seconds": stage_seconds,
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "csv_write_seconds": round(write_seconds, 2),
        "python": platform.python_version(),
        "pandas": pd.__version__,
        "cpus": os.cpu_count(),
    }


def _phases(result: dict[str, Any]) -> dict[str, float]:
    """Seconds per reported phase, and the rest of the import's wall time."""
    phases = {name: float(v) for name, v in result["stage_seconds"].items()}
    phases[OUTSIDE] = max(0.0, float(result["seconds"]) - sum(phases.values()))
    return phases


def markdown(result: dict[str, Any]) -> str:
    """The Markdown report of an ``import`` result."""
    phases = _phases(result)
    rows = result["rows"]
    table_rows = [
        (
            f"{name} ({PHASES[name]})"
            if name in PHASES
            else f"{name} (split into stores, output directory's rename)",
            reporting.fmt(seconds, 3),
            reporting.pct(seconds / result["seconds"]),
            reporting.fmt(round(rows / seconds)) if seconds > 0 and name != OUTSIDE else "—",
        )
        for name, seconds in phases.items()
    ]
    slowest = max(result["stage_seconds"].items(), key=lambda kv: kv[1])
    lines = [
        "# Importing a messy transactions export",
        "",
        reporting.run_header(result, "benchmarks.bench_import"),
        "",
        f"`fedcrm import` of a {result['file_mb']} MB CSV of {rows:,} lines (BOM, padded "
        "headers, leading-zero ids, day-first dates, currency-formatted amounts, quoted "
        "multi-line descriptions, about 1% returns) into "
        f"{result['stores']} stores by hash split, all-granted consent, invalid rows skipped; "
        f"detected date format `{result['date_format']}`. Python {result['python']}, pandas "
        f"{result['pandas']}.",
        "",
        *reporting.table(
            ["measure", "value"],
            [
                ("wall seconds (import)", reporting.fmt(result["seconds"])),
                (
                    "rows per second (lines in the file / seconds)",
                    reporting.fmt(result["rows_per_second"]),
                ),
                ("rows imported", reporting.fmt(result["rows_imported"])),
                (
                    "rows skipped",
                    f"{result['rows_skipped']:,} "
                    f"({reporting.pct(result['rows_skipped'] / rows, 2)})",
                ),
                (
                    "peak RSS MB (`ru_maxrss`, importer only)",
                    reporting.fmt(result["peak_rss_mb"], 1),
                ),
                (
                    "seconds to write the CSV (child process, not part of the import)",
                    reporting.fmt(result["csv_write_seconds"]),
                ),
            ],
        ),
        "",
        *reporting.table(
            ["phase", "seconds", "share of the import", "lines per second"], table_rows
        ),
        "",
        "## Findings",
        "",
        f"- {rows:,} lines imported in {result['seconds']} s ({result['rows_per_second']:,} "
        f"lines/s); the slowest phase is {slowest[0]} ({slowest[1]} s, "
        f"{reporting.pct(slowest[1] / result['seconds'], 0)} of the import).",
        f"- {result['rows_skipped']:,} rows skipped "
        f"({reporting.pct(result['rows_skipped'] / rows, 2)}; the export has about 1% returns "
        "with negative quantities).",
        f"- Peak resident memory {result['peak_rss_mb']} MB for a {result['file_mb']} MB file "
        f"({result['peak_rss_mb'] / result['file_mb']:.1f}x its size).",
        "",
    ]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    """Seconds and throughput per phase of an ``import`` result."""
    phases = _phases(result)
    figure = reporting.new_figure(12, 4.2)
    ax_time, ax_rate = figure.subplots(1, 2)
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:gray"][: len(phases)]
    bars = ax_time.bar(list(phases), list(phases.values()), color=colors)
    reporting.label_bars(ax_time, bars, [f"{v:.2f} s" for v in phases.values()])
    ax_time.set(ylabel="seconds", title=f"Import phases: {result['seconds']} s in all")
    ax_time.tick_params(axis="x", labelsize=8)
    ax_time.margins(y=0.15)

    timed = {k: v for k, v in result["stage_seconds"].items() if v > 0}
    rates = [result["rows"] / v for v in timed.values()]
    bars = ax_rate.bar(list(timed), rates, color=colors[: len(timed)])
    reporting.label_bars(ax_rate, bars, [f"{v / 1000:,.0f}k" for v in rates])
    ax_rate.axhline(result["rows_per_second"], color="black", linestyle="--", linewidth=0.8)
    ax_rate.annotate(
        f"whole import: {result['rows_per_second']:,} lines/s",
        (0.01, result["rows_per_second"]),
        xycoords=("axes fraction", "data"),
        xytext=(0, 3),
        textcoords="offset points",
        fontsize=8,
    )
    ax_rate.set(ylabel="lines per second", title="Throughput of each phase alone")
    ax_rate.margins(y=0.15)
    figure.suptitle(
        f"fedcrm import: {result['rows']:,} lines, {result['file_mb']} MB CSV, "
        f"{result['stores']} stores; peak RSS {result['peak_rss_mb']} MB; {result['cpus']} CPUs",
        fontsize=10,
    )
    reporting.save_figure(figure, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--stores", type=int, default=8)
    parser.add_argument("--write-only", type=Path, help=argparse.SUPPRESS)
    parser.add_argument(
        "--render-only", action="store_true", help="Re-render the .md and .png from the JSON."
    )
    args = parser.parse_args()
    if args.write_only is not None:
        write_messy_csv(args.write_only, args.rows)
        return
    if args.render_only:
        reporting.render_existing(NAME, markdown, plot)
        return
    with (
        reporting.RunInfo("benchmarks.bench_import") as info,
        tempfile.TemporaryDirectory(prefix="fedcrm-bench-import-") as tmp,
    ):
        result = run(args.rows, args.stores, Path(tmp))
    result["run"] = info.summary()
    reporting.write_report(NAME, result, markdown, plot, ensure_ascii=False)
    print(json.dumps(result, indent=2, ensure_ascii=False))  # a script's own output


if __name__ == "__main__":
    main()
