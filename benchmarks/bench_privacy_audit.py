"""Empirical privacy audit of a store's DP-SGD: canary membership inference → ε lower bounds.

    python -m benchmarks.bench_privacy_audit [--runs 3] [--canaries 1000] [--customers 3000]

One synthetic store (``fedcrm generate``'s generator, 1 store, seed 7) is prepared with the
store pipeline (consent, de-identification, features, 60-day churn labels); its feature rows
are the base data. Each audit run (:func:`fedcrm.privacy.membership_audit.run_audit`) adds
canaries with probability 1/2, trains once and turns the membership guesses into a one-run ε
lower bound (Steinke, Nasr & Jagielski 2023) at 95% confidence, δ = ``default_delta(rows)``:

- ``rare_feature`` canaries on the logistic churn model with the demo's churn training
  (SGD, learning rate 0.5, expected batch 128, clip 1.0, 20 rounds x 1 local epoch = 20
  epochs of one store's DP-SGD), and a non-private control with the same hyperparameters;
- ``mislabeled`` canaries (plausible rows, surprising labels) on the MLP churn model
  (32 hidden units): DP-SGD as above; the control trains with Adam (0.01) for 100 epochs.

For each claimed ε ∈ {0.5, 1, 3, 8} and each control, ``--runs`` independent runs (seeds
0..runs-1); the ``pooled`` bound treats their canaries as one audit (valid: each canary is in
one run only). Writes ``benchmarks/results/privacy_audit.json`` and the plot
``benchmarks/results/privacy_audit.png`` (bound vs claimed ε, with y = x).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedcrm.clients.preparation import PreparationRequest, prepare_store
from fedcrm.data.layout import discover_stores
from fedcrm.errors import PrivacyWarning
from fedcrm.privacy.accounting import default_delta
from fedcrm.privacy.membership_audit import AuditConfig, AuditResult, epsilon_lower_bound, run_audit
from fedcrm.synthetic.chain import ChainParams, generate_chain

logger = logging.getLogger(__name__)

RESULTS = Path(__file__).resolve().parent / "results" / "privacy_audit.json"
PLOT = RESULTS.with_suffix(".png")
EPSILONS = (0.5, 1.0, 3.0, 8.0)
#: (design, model, DP-SGD training, extra settings of the non-private control)
SETUPS: tuple[tuple[str, str, dict[str, Any], dict[str, Any]], ...] = (
    ("rare_feature", "logistic", {}, {}),
    ("mislabeled", "mlp", {}, {"optimizer": "adam", "learning_rate": 0.01, "epochs": 100}),
)


def _r(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


def store_rows(customers: int, seed: int, workdir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Feature rows and churn labels of one synthetic store, through the store pipeline."""
    generate_chain(workdir, ChainParams(stores=1, customers_per_store=customers, seed=seed))
    prepared = prepare_store(discover_stores(workdir)[0], PreparationRequest(horizon_days=60))
    if prepared.labels is None:
        raise RuntimeError("the synthetic store produced no labels")
    x = np.asarray(prepared.features.matrix, dtype=np.float32)
    y = np.asarray(prepared.labels.churn, dtype=np.float32)
    # Rows come in pseudonym order, and a fresh store key reorders them: sort by value so that
    # the canaries drawn from the rows (mislabeled design) repeat from run to run.
    order = np.lexsort(np.column_stack([x, y]).T)
    return x[order], y[order]


def _run_summary(seed: int, result: AuditResult) -> dict[str, Any]:
    return {
        "seed": seed,
        "epsilon_lower": _r(result.epsilon_lower),
        "auc": _r(result.auc),
        "noise_multiplier": _r(result.noise_multiplier),
        "sample_rate": _r(result.sample_rate, 6),
        "steps": result.steps,
        "included": result.included,
        "records": result.records,
        "guesses_correct": [[o.guesses, o.correct, _r(o.epsilon_lower)] for o in result.outcomes],
        "seconds": _r(result.seconds, 2),
    }


def audit(x: np.ndarray, y: np.ndarray, config: AuditConfig, runs: int) -> dict[str, Any]:
    """``runs`` audit runs of ``config`` (seeds 0..runs-1) and their pooled bound."""
    results = [run_audit(x, y, dataclasses.replace(config, seed=s)) for s in range(runs)]
    pooled, outcomes = epsilon_lower_bound(
        np.concatenate([r.scores for r in results]),
        np.concatenate([r.membership for r in results]),
        config.delta,
        config.guess_fractions,
        config.confidence,
    )
    bounds = [r.epsilon_lower for r in results]
    return {
        "design": config.design,
        "model": config.model,
        "claimed_epsilon": config.epsilon,
        "training": {
            "optimizer": config.optimizer,
            "learning_rate": config.learning_rate,
            "epochs": config.epochs,
            "expected_batch_size": config.expected_batch_size,
            "max_grad_norm": None if config.epsilon is None else config.max_grad_norm,
        },
        "canaries_per_run": config.canaries,
        "epsilon_lower_per_run": [_r(b) for b in bounds],
        "epsilon_lower_median": _r(float(np.median(bounds))),
        "pooled_canaries": config.canaries * runs,
        "pooled_epsilon_lower": _r(pooled),
        "pooled_guesses_correct": [[o.guesses, o.correct, _r(o.epsilon_lower)] for o in outcomes],
        "below_claim": None
        if config.epsilon is None
        else bool(max([*bounds, pooled]) < config.epsilon),
        "runs": [_run_summary(s, r) for s, r in enumerate(results)],
    }


def plot(audits: list[dict[str, Any]], path: Path) -> None:
    """Bound vs claimed ε per design (pooled: line; single runs: dots), controls dashed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 5), layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    top = max(EPSILONS)
    ax.plot([0, top], [0, top], color="grey", linewidth=1, label="y = x (claimed ε)")
    for (design, model, _, _), color in zip(SETUPS, ("tab:blue", "tab:orange"), strict=True):
        mine = [a for a in audits if a["design"] == design]
        dp = [a for a in mine if a["claimed_epsilon"] is not None]
        ax.plot(
            [a["claimed_epsilon"] for a in dp],
            [a["pooled_epsilon_lower"] for a in dp],
            marker="o",
            color=color,
            label=f"{design} canaries, {model} model ({len(dp[0]['runs'])} runs pooled; dots: "
            "single runs)",
        )
        for a in dp:
            runs = a["epsilon_lower_per_run"]
            ax.scatter([a["claimed_epsilon"]] * len(runs), runs, color=color, s=12, alpha=0.5)
        for a in mine:
            if a["claimed_epsilon"] is None:
                value = a["pooled_epsilon_lower"]
                ax.axhline(
                    value,
                    color=color,
                    linestyle="--",
                    linewidth=1,
                    label=f"non-private control ({design}): {value:.2f}",
                )
    ax.set(
        xlabel="claimed ε (PRV accountant, δ = 1e-5)",
        ylabel="empirical ε lower bound (95% confidence)",
        title="Canary membership audit of a store's DP-SGD",
        xlim=(0, top + 0.5),
        ylim=(0, top + 0.5),
    )
    ax.legend(fontsize=8, loc="upper left")
    figure.savefig(path, dpi=110)


def run(runs: int, canaries: int, customers: int, seed: int) -> dict[str, Any]:
    torch.set_num_threads(1)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        x, y = store_rows(customers, seed, Path(tmp) / "chain")
    delta = default_delta(len(x))
    audits = []
    with warnings.catch_warnings():  # seeded DP noise is the point of a repeatable audit
        warnings.simplefilter("ignore", PrivacyWarning)
        for design, model, dp_training, control_training in SETUPS:
            base = AuditConfig(None, delta=delta, canaries=canaries, design=design, model=model)
            configs = [dataclasses.replace(base, **control_training)]
            configs += [dataclasses.replace(base, epsilon=e, **dp_training) for e in EPSILONS]
            for config in configs:
                audits.append(audit(x, y, config, runs))
                a = audits[-1]
                logger.info(
                    "%s/%s claimed ε=%s: pooled ε_lower=%s, per run %s",
                    design,
                    model,
                    config.epsilon,
                    a["pooled_epsilon_lower"],
                    a["epsilon_lower_per_run"],
                )
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    plot(audits, PLOT)
    return {
        "benchmark": "privacy_audit",
        "store": {
            "rows": len(x),
            "features": int(x.shape[1]),
            "churn_rate": _r(float(y.mean())),
            "customers_generated": customers,
            "seed": seed,
        },
        "delta": delta,
        "confidence": base.confidence,
        "guess_fractions": list(base.guess_fractions),
        "runs_per_setting": runs,
        "audits": audits,
        "plot": PLOT.name,
        "seconds": _r(time.perf_counter() - started, 1),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
    }


def _markdown(result: dict) -> str:
    """The audit table: empirical ε lower bound (95%) against the claimed ε."""
    lines = [
        "# Empirical privacy audit (one-run canary membership inference)",
        "",
        f"Written by `python -m benchmarks.bench_privacy_audit` in {result['seconds']} s; "
        f"δ = {result['delta']}, confidence {result['confidence']}, "
        f"{result['runs_per_setting']} runs per setting. See docs/privacy_audit.md.",
        "",
        "| canaries | model | claimed ε | ε lower bound per run | pooled | below the claim |",
        "|---|---|---:|---|---:|---|",
    ]
    for a in result["audits"]:
        claimed = "non-private" if a["claimed_epsilon"] is None else a["claimed_epsilon"]
        runs = " / ".join(f"{v:.2f}" for v in a["epsilon_lower_per_run"])
        below = "—" if a["below_claim"] is None else ("yes" if a["below_claim"] else "**no**")
        lines.append(
            f"| {a['design']} | {a['model']} | {claimed} | {runs} | "
            f"{a['pooled_epsilon_lower']:.2f} | {below} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--canaries", type=int, default=1000)
    parser.add_argument("--customers", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    for name in (__name__, "fedcrm.privacy.membership_audit"):
        logging.getLogger(name).setLevel(logging.INFO)
    result = run(args.runs, args.canaries, args.customers, args.seed)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    RESULTS.with_suffix(".md").write_text(_markdown(result), encoding="utf-8")
    summary = {
        f"{a['design']} ε={a['claimed_epsilon']}": a["pooled_epsilon_lower"]
        for a in result["audits"]
    }
    print(json.dumps({"seconds": result["seconds"], "pooled_epsilon_lower": summary}, indent=2))


if __name__ == "__main__":
    main()
