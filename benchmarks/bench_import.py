"""Benchmark `fedcrm import` on a realistic, messy transactions export.

    python -m benchmarks.bench_import [--rows 1000000] [--stores 8]

A child process writes the CSV (UTF-8 BOM, padded headers, leading-zero customer ids, day-first
``dd/mm/yyyy HH:MM`` dates, ``¥1,234.50``-style amounts, quoted descriptions with commas,
quotes and newlines, about 1% returns with negative quantities); this process then imports it
(hash split, all-granted consent, returns skipped) and reports seconds, rows per second and
peak resident memory (``ru_maxrss``, so the writer's memory is not counted). The result is
written to ``benchmarks/results/import.json``.
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

import numpy as np
import pandas as pd

RESULTS = Path(__file__).resolve().parent / "results" / "import.json"
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--stores", type=int, default=8)
    parser.add_argument("--write-only", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write_only is not None:
        write_messy_csv(args.write_only, args.rows)
        return
    with tempfile.TemporaryDirectory(prefix="fedcrm-bench-import-") as tmp:
        result = run(args.rows, args.stores, Path(tmp))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2, ensure_ascii=False))  # a script's own output


if __name__ == "__main__":
    main()
