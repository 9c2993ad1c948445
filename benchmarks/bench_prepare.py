"""Benchmark the store pipeline (load → consent → de-identification → features → labels).

    python -m benchmarks.bench_prepare [--customers-per-store 2700] [--stores 8]
    python -m benchmarks.bench_prepare --render-only

Generates a chain of about a million transactions (the default sizes) into a temporary
directory, then runs :func:`fedcrm.clients.preparation.prepare_store` on every store, timing
each stage summed over the stores (by wrapping the functions ``prepare_store`` calls, in this
process only: load, consent + de-identification, pseudonym map, features, labels + history;
the rest is "other"). Peak resident memory is ``ru_maxrss`` of this process (it includes the
generator's peak, reported separately). Writes ``benchmarks/results/prepare.json``,
``prepare.md`` and ``prepare.png`` (``--render-only``: only the last two, from the JSON
already there).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import fedcrm.clients.preparation as preparation
from benchmarks import reporting
from fedcrm.clients.preparation import PreparationRequest, prepare_store
from fedcrm.data.layout import discover_stores
from fedcrm.synthetic.chain import ChainParams, generate_chain

NAME = "prepare"
RESULTS, MARKDOWN, PLOT = reporting.paths(NAME)
# prepare_store's steps: the module-level function it calls for each, and the stage's name
STAGES = {
    "load_store": "load + validate",
    "release_for_purpose": "consent + de-identification",
    "_persist_pseudonym_map": "pseudonym map",
    "build_store_features": "features",
    "_labels_and_history": "labels + history",
}
OTHER = "other"


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


@contextmanager
def timed_stages() -> Iterator[dict[str, float]]:
    """Seconds per stage of ``prepare_store`` (summed over calls) while in use, by wrapping
    the functions it calls in :mod:`fedcrm.clients.preparation` (this process only)."""
    seconds: dict[str, float] = {}
    originals: dict[str, Callable[..., Any]] = {}

    def wrap(attribute: str, stage: str) -> Callable[..., Any]:
        inner = originals[attribute]

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                seconds[stage] = seconds.get(stage, 0.0) + time.perf_counter() - began

        return wrapper

    for attribute, stage in STAGES.items():
        if hasattr(preparation, attribute):  # renamed: that stage falls into "other"
            originals[attribute] = getattr(preparation, attribute)
            setattr(preparation, attribute, wrap(attribute, stage))
    try:
        yield seconds
    finally:
        for attribute, inner in originals.items():
            setattr(preparation, attribute, inner)


def run(stores: int, customers_per_store: int, seed: int, workdir: Path) -> dict[str, object]:
    chain = workdir / "chain"
    generated = generate_chain(
        chain, ChainParams(stores=stores, customers_per_store=customers_per_store, seed=seed)
    )
    rss_after_generate = _rss_mb()
    request = PreparationRequest(horizon_days=60)
    started = time.perf_counter()
    feature_rows = 0
    with timed_stages() as stage_seconds:
        for root in discover_stores(chain):
            prepared = prepare_store(root, request)
            feature_rows += len(prepared.features.customer_ids)
    seconds = time.perf_counter() - started
    stage_seconds[OTHER] = max(0.0, seconds - sum(stage_seconds.values()))
    return {
        "benchmark": "prepare",
        "stores": stores,
        "customers": sum(s.customers for s in generated.stores),
        "transactions": generated.transactions,
        "total_input_rows": generated.total_rows,
        "feature_rows": feature_rows,
        "seconds": round(seconds, 2),
        "stage_seconds": {name: round(v, 3) for name, v in stage_seconds.items()},
        "input_rows_per_second": round(generated.total_rows / seconds),
        "transactions_per_second": round(generated.transactions / seconds),
        "peak_rss_mb_after_generate": round(rss_after_generate, 1),
        "peak_rss_mb": round(_rss_mb(), 1),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


def markdown(result: dict[str, Any]) -> str:
    """The Markdown report of a ``prepare`` result."""
    stages: dict[str, float] = result.get("stage_seconds") or {}
    seconds = result["seconds"]
    lines = [
        "# Preparing the stores (load → consent → de-identification → features → labels)",
        "",
        reporting.run_header(result, "benchmarks.bench_prepare"),
        "",
        f"`prepare_store` (60-day horizon) on each of the {result['stores']} stores of a "
        f"generated chain: {result['customers']:,} customers, {result['transactions']:,} "
        f"transactions, {result['total_input_rows']:,} input rows in all tables; Python "
        f"{result['python']}.",
        "",
        *reporting.table(
            ["measure", "value"],
            [
                ("wall seconds (all stores)", reporting.fmt(seconds)),
                ("input rows per second", reporting.fmt(result["input_rows_per_second"])),
                ("transactions per second", reporting.fmt(result["transactions_per_second"])),
                (
                    "feature rows (consented customers with a purchase before the cutoff)",
                    f"{result['feature_rows']:,} of {result['customers']:,} customers "
                    f"({reporting.pct(result['feature_rows'] / result['customers'])})",
                ),
                (
                    "peak RSS MB after generating the chain (`ru_maxrss`)",
                    reporting.fmt(result["peak_rss_mb_after_generate"], 1),
                ),
                ("peak RSS MB after preparing", reporting.fmt(result["peak_rss_mb"], 1)),
            ],
        ),
        "",
    ]
    if stages:
        lines += reporting.table(
            ["stage (summed over the stores)", "seconds", "share"],
            [(n, reporting.fmt(v, 3), reporting.pct(v / seconds)) for n, v in stages.items()],
        )
    else:
        lines.append(
            "Per-stage seconds were not recorded in this JSON (it predates the stage timing); "
            "the next run records them."
        )
    growth = result["peak_rss_mb"] - result["peak_rss_mb_after_generate"]
    lines += [
        "",
        "## Findings",
        "",
        f"- The {result['stores']} stores are prepared in {seconds} s: "
        f"{result['transactions_per_second']:,} transactions/s, "
        f"{result['input_rows_per_second']:,} input rows/s, one process.",
    ]
    if stages:
        name, value = max(stages.items(), key=lambda kv: kv[1])
        lines.append(
            f"- The slowest stage is {name}: {value} s ({reporting.pct(value / seconds)})."
        )
    lines += [
        f"- Preparing raises the process's peak memory by {growth:.0f} MB above the "
        f"{result['peak_rss_mb_after_generate']} MB peak of generating the chain in the same "
        "process (`ru_maxrss` is the process's peak: the generation is in the baseline).",
        "",
    ]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    """Seconds per stage, rows in and out, and memory of a ``prepare`` result."""
    stages: dict[str, float] = result.get("stage_seconds") or {}
    figure = reporting.new_figure(15, 4.4)
    ax_time, ax_rows, ax_mem = figure.subplots(1, 3)
    if stages:
        bars = ax_time.barh(list(stages), list(stages.values()), color="tab:blue")
        reporting.label_bars(ax_time, bars, [f"{v:.2f} s" for v in stages.values()])
        ax_time.invert_yaxis()
        ax_time.set(xlabel="seconds (summed over the stores)", title="Time per stage")
        ax_time.margins(x=0.2)
    else:
        bars = ax_time.bar(["all stages"], [result["seconds"]], color="tab:blue")
        reporting.label_bars(ax_time, bars, [f"{result['seconds']:.2f} s"])
        ax_time.set(ylabel="seconds", title="Time (per-stage times not in this JSON)")
        ax_time.margins(y=0.15)

    rows = {"customers on file": result["customers"], "feature rows": result["feature_rows"]}
    bars = ax_rows.bar(list(rows), list(rows.values()), color=["tab:gray", "tab:green"])
    reporting.label_bars(ax_rows, bars, [f"{v:,}" for v in rows.values()])
    ax_rows.set(ylabel="customers", title="Customers in, feature rows out")
    ax_rows.margins(y=0.15)

    memory = {
        "after generating": result["peak_rss_mb_after_generate"],
        "after preparing": result["peak_rss_mb"],
    }
    bars = ax_mem.bar(list(memory), list(memory.values()), color=["tab:gray", "tab:red"])
    reporting.label_bars(ax_mem, bars, [f"{v:.0f} MB" for v in memory.values()])
    ax_mem.set(ylabel="MB (ru_maxrss)", title="Peak memory of the process")
    ax_mem.margins(y=0.15)
    figure.suptitle(
        f"Store preparation: {result['stores']} stores, {result['transactions']:,} "
        f"transactions in {result['seconds']} s ({result['transactions_per_second']:,}/s); "
        f"{result['cpus']} CPUs",
        fontsize=10,
    )
    reporting.save_figure(figure, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", type=int, default=8)
    parser.add_argument("--customers-per-store", type=int, default=2700)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--render-only", action="store_true", help="Re-render the .md and .png from the JSON."
    )
    args = parser.parse_args()
    if args.render_only:
        reporting.render_existing(NAME, markdown, plot)
        return
    with (
        reporting.RunInfo("benchmarks.bench_prepare") as info,
        tempfile.TemporaryDirectory() as tmp,
    ):
        result = run(args.stores, args.customers_per_store, args.seed, Path(tmp))
    result["run"] = info.summary()
    reporting.write_report(NAME, result, markdown, plot)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
