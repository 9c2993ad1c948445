"""Round latency on Flower's deployment engine (a real SuperLink and SuperNodes on loopback).

    python -m benchmarks.bench_deployment [--rounds R] [--stores S] [--customers N] [--label L]

Generates a chain, starts the deployment of ``fedcrm.deployment.loopback`` (TLS, SuperNode
authentication), runs the churn task for R rounds with SecAgg+ (preference and analytics
off) and reads the coordinator's per-round timing from ``summary.json``:

- ``fit_seconds``: configure → aggregate of one training round (all four SecAgg+ stages; each
  stage is one message to every store and so one fresh ``flwr-clientapp`` process per store);
- ``evaluate_seconds``: the federated evaluation of that round (one message per store);
- ``store_seconds_max``: the slowest store's own handling of its training message (what the
  store's code takes once its process is up), so ``fit_seconds - store_seconds_max`` is what
  process start-up, imports and coordination add.

Appends one record (labelled ``--label``, e.g. ``before``/``after``) to
``benchmarks/results/deployment.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from fedcrm.deployment.loopback import loopback_deployment
from fedcrm.synthetic.chain import ChainParams, generate_chain

RESULTS = Path(__file__).resolve().parent / "results" / "deployment.json"


_ROUND_KEYS = ("round", "fit_seconds", "evaluate_seconds", "store_seconds_max",
               "store_seconds_mean", "fit_results")  # fmt: skip


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


def run(rounds: int, stores: int, customers: int, workdir: Path) -> dict[str, object]:
    chain = workdir / "chain"
    generate_chain(chain, ChainParams(stores=stores, customers_per_store=customers, seed=5))
    names = [f"s{i:02d}" for i in range(stores)]
    run_dir = workdir / "run"
    with loopback_deployment(workdir / "deployment", chain, names) as deployment:
        outcome = deployment.run_app(
            {
                "num-rounds": rounds,
                "preference": False,
                "analytics-queries": "",
                "run-dir": str(run_dir),
                "expected-stores": stores,
                "min-stores": stores,
                "audit-key-dir": str(workdir / "coordinator-keys"),
                "node-timeout": 300,
            },
            timeout=300 + 240 * rounds,
        )
    if outcome.status != "finished:completed":
        raise SystemExit(f"run {outcome.run_id} ended {outcome.status}:\n{outcome.output[-3000:]}")
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    history = summary["history"]
    fit = [float(r["fit_seconds"]) for r in history if r.get("fit_seconds") is not None]
    evaluate = [float(r["evaluate_seconds"]) for r in history if r.get("evaluate_seconds")]
    store = [float(r["store_seconds_max"]) for r in history if r.get("store_seconds_max")]
    overhead = [
        float(r["fit_seconds"]) - float(r["store_seconds_max"])
        for r in history
        if r.get("fit_seconds") is not None and r.get("store_seconds_max") is not None
    ]
    return {
        "rounds": rounds,
        "stores": stores,
        "customers_per_store": customers,
        "run_wall_seconds": round(outcome.seconds, 1),
        "training_seconds": summary.get("training_seconds"),
        "per_round": [{k: r.get(k) for k in _ROUND_KEYS} for r in history],
        "median_fit_seconds": _median(fit),
        "median_evaluate_seconds": _median(evaluate),
        "median_round_seconds": _median([f + e for f, e in zip(fit, evaluate, strict=False)]),
        "median_store_seconds_max": _median(store),
        "median_fit_overhead_seconds": _median(overhead),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stores", type=int, default=3)
    parser.add_argument("--customers", type=int, default=400)
    parser.add_argument("--label", default="current")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fedcrm-bench-deploy-") as tmp:
        record = run(args.rounds, args.stores, args.customers, Path(tmp))
    record.update(
        load_average=[round(x, 1) for x in os.getloadavg()],
        label=args.label,
        measured_at=time.strftime("%Y-%m-%dT%H:%M:%S"),
        machine={"cpus": os.cpu_count(), "python": platform.python_version()},
    )
    previous = json.loads(RESULTS.read_text(encoding="utf-8")) if RESULTS.is_file() else []
    previous = [r for r in previous if r.get("label") != args.label] + [record]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(previous, indent=2) + "\n", encoding="utf-8")
    _plot(previous, RESULTS.with_suffix(".png"))
    RESULTS.with_suffix(".md").write_text(_markdown(previous), encoding="utf-8")
    print(json.dumps(record, indent=2))


def _markdown(records: list[dict]) -> str:
    """One row per labelled measurement: medians over the run's rounds."""
    lines = [
        "# Round latency on the deployment engine",
        "",
        "`python -m benchmarks.bench_deployment --label L`: a real SuperLink and SuperNodes on "
        "loopback (TLS, SuperNode authentication), SecAgg+, churn only. Seconds, median over "
        "the rounds.",
        "",
        "| label | stores × customers | rounds | training round | of which the slowest store "
        "| rest (processes, SecAgg+, polling) | evaluation | round | measured at (load) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in records:
        load = r.get("load_average")
        lines.append(
            f"| {r['label']} | {r['stores']} × {r['customers_per_store']} | {r['rounds']} | "
            f"{r['median_fit_seconds']} | {r['median_store_seconds_max']} | "
            f"{r['median_fit_overhead_seconds']} | {r['median_evaluate_seconds']} | "
            f"{r['median_round_seconds']} | {r['measured_at']}"
            + (f" ({load})" if load else "")
            + " |"
        )
    return "\n".join(lines) + "\n"


def _plot(records: list[dict], path: Path) -> None:
    """Median round time per labelled measurement: training (all SecAgg+ stages; the slowest
    store's own share marked) and evaluation."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    labels = [str(r["label"]) for r in records]
    fit = [r.get("median_fit_seconds") or 0.0 for r in records]
    store = [r.get("median_store_seconds_max") or 0.0 for r in records]
    evaluate = [r.get("median_evaluate_seconds") or 0.0 for r in records]
    fig, ax = plt.subplots(figsize=(7, 2.2 + 0.5 * len(labels)))
    ax.barh(labels, store, color="#4c72b0", label="slowest store's own handling of training")
    rest = [f - s for f, s in zip(fit, store, strict=True)]
    ax.barh(labels, rest, left=store, color="#8da0cb",
            label="rest of the training round (processes, SecAgg+, polling)")  # fmt: skip
    ax.barh(labels, evaluate, left=fit, color="#dd8452", label="federated evaluation")
    ax.set_xlabel("seconds per round (median)")
    ax.set_title("Round latency on the deployment engine (3 stores, loopback, TLS)")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
