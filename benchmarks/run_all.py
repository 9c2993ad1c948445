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
)


def main() -> None:
    for name in BENCHMARKS:
        print(f"== {name}", flush=True)
        sys.argv = [name]
        runpy.run_module(name, run_name="__main__")


if __name__ == "__main__":
    main()
