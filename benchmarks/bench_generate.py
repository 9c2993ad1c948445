"""Benchmark `fedcrm generate`: a synthetic chain of about a million transactions.

    python -m benchmarks.bench_generate [--transactions 1000000] [--stores 8] [--format parquet]

A small pilot chain measures transactions per customer for the seed; the measured run is
then sized to about ``--transactions`` lines and generated (and written) into a temporary
directory. Reports wall time, transactions and rows per second, peak resident memory
(``ru_maxrss``; the memory in use before the run is reported beside it) and size on disk,
and writes the result to ``benchmarks/results/generate.json``.
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
from typing import cast

import numpy as np
import pandas as pd

from fedcrm.data.store import TableFormat
from fedcrm.synthetic.chain import ChainParams, generate_chain

RESULTS = Path(__file__).resolve().parent / "results" / "generate.json"
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transactions", type=int, default=1_000_000)
    parser.add_argument("--stores", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--format", choices=("parquet", "csv"), default="parquet")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fedcrm-bench-generate-") as tmp:
        fmt = cast(TableFormat, args.format)
        result = run(args.transactions, args.stores, args.seed, fmt, Path(tmp))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
