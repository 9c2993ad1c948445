"""Benchmark the store pipeline (load → consent → de-identification → features → labels).

    python -m benchmarks.bench_prepare [--customers-per-store 2700] [--stores 8]

Generates a chain of about a million transactions (the default sizes) into a temporary
directory, then runs :func:`fedcrm.clients.preparation.prepare_store` on every store, timing
each stage in total. Peak resident memory is ``ru_maxrss`` of this process (it includes the
generator's peak, reported separately). Writes ``benchmarks/results/prepare.json``.
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

from fedcrm.clients.preparation import PreparationRequest, prepare_store
from fedcrm.data.layout import discover_stores
from fedcrm.synthetic.chain import ChainParams, generate_chain

RESULTS = Path(__file__).resolve().parent / "results" / "prepare.json"


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run(stores: int, customers_per_store: int, seed: int, workdir: Path) -> dict[str, object]:
    chain = workdir / "chain"
    generated = generate_chain(
        chain, ChainParams(stores=stores, customers_per_store=customers_per_store, seed=seed)
    )
    rss_after_generate = _rss_mb()
    request = PreparationRequest(horizon_days=60)
    started = time.perf_counter()
    feature_rows = 0
    for root in discover_stores(chain):
        prepared = prepare_store(root, request)
        feature_rows += len(prepared.features.customer_ids)
    seconds = time.perf_counter() - started
    return {
        "benchmark": "prepare",
        "stores": stores,
        "customers": sum(s.customers for s in generated.stores),
        "transactions": generated.transactions,
        "total_input_rows": generated.total_rows,
        "feature_rows": feature_rows,
        "seconds": round(seconds, 2),
        "input_rows_per_second": round(generated.total_rows / seconds),
        "transactions_per_second": round(generated.transactions / seconds),
        "peak_rss_mb_after_generate": round(rss_after_generate, 1),
        "peak_rss_mb": round(_rss_mb(), 1),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", type=int, default=8)
    parser.add_argument("--customers-per-store", type=int, default=2700)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args.stores, args.customers_per_store, args.seed, Path(tmp))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
