"""Run every benchmark; each writes its JSON result to benchmarks/results/."""

from __future__ import annotations

import runpy
import sys

BENCHMARKS = (
    "benchmarks.bench_generate",
    "benchmarks.bench_import",
    "benchmarks.bench_prepare",
    "benchmarks.bench_demo",
    "benchmarks.bench_preference",
    "benchmarks.bench_analytics",
    "benchmarks.bench_privacy_audit",
    "benchmarks.bench_cost",
    "benchmarks.bench_scale",
    "benchmarks.bench_realdata",
    "benchmarks.bench_deployment",
)


def main() -> None:
    for name in BENCHMARKS:
        print(f"== {name}", flush=True)
        sys.argv = [name]
        runpy.run_module(name, run_name="__main__")


if __name__ == "__main__":
    main()
