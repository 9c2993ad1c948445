"""Benchmark local DP-SGD training of the category preference model on one synthetic store.

    python -m benchmarks.bench_preference [--customers 3000] [--features 100]
        [--categories 2000] [--rounds 5] [--noise-multiplier 1.0]
    python -m benchmarks.bench_preference --render-only

The store has Zipf-like category popularity and planted preferences (customer segments, each
favouring a few categories, visible in the features and the purchase history). Each round is
what one federated round costs a store: 1 local epoch of DP-SGD at expected batch 128, with
one thread. Reports seconds per round, peak RSS (``ru_maxrss``), the parameter count and, as a
sanity check after ``--rounds`` rounds, recall@10 on held-out customers against the
popularity and buy-again baselines and against the same training without noise (a reference,
not private). Writes ``benchmarks/results/preference.json``, ``preference.md`` and
``preference.png`` (``--render-only``: only the last two, from the JSON already there).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks import reporting
from fedcrm.errors import PrivacyWarning
from fedcrm.models.preference import build_preference_model, predict_scores, preference_inputs
from fedcrm.models.ranking import (
    ndcg_at_k,
    own_history_ranking,
    popularity_ranking,
    recall_at_k,
    top_k,
)
from fedcrm.models.vocabulary import SparseRows
from fedcrm.privacy.dp_sgd import DpSgdConfig, train_dp

NAME = "preference"
RESULTS, MARKDOWN, PLOT = reporting.paths(NAME)
K = 10


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def planted_world(
    features: int, categories: int, seed: int, segments: int = 40, liked: int = 12
) -> tuple[np.ndarray, np.ndarray]:
    """(segment centres in feature space, per-segment purchase rates per category).

    Rates: Zipf-like popularity (~6 lines per horizon), plus ``liked`` planted categories
    per segment (outside the 20 most popular), plus a little mass on column 0 (unknown).
    """
    rng = np.random.default_rng(seed)
    zipf = 1.0 / np.arange(1, categories) ** 1.1
    rate = np.zeros((segments, categories))
    rate[:, 0] = 0.2
    rate[:, 1:] = 6.0 * zipf / zipf.sum()
    for s in range(segments):
        rate[s, rng.choice(np.arange(20, categories), liked, replace=False)] += 0.25
    return rng.normal(size=(segments, features)).astype(np.float32), rate


def synthetic_store(
    world: tuple[np.ndarray, np.ndarray], customers: int, seed: int, chunk: int = 250
) -> tuple[np.ndarray, SparseRows, SparseRows]:
    """(features, pre-cutoff history counts, horizon multi-hot) of customers of ``world``.

    Generated ``chunk`` customers at a time, so the generator's memory stays small.
    """
    centres, rate = world
    n_cols = rate.shape[1]
    rng = np.random.default_rng(seed)
    segment = rng.integers(0, len(centres), customers)
    x = centres[segment] + 1.5 * rng.normal(size=(customers, centres.shape[1])).astype(np.float32)
    hist_rows, hist_cols, hist_counts, bought_rows, bought_cols = [], [], [], [], []
    for start in range(0, customers, chunk):
        lam = rate[segment[start : start + chunk]]
        counts = rng.poisson(2.0 * lam)  # history: twice the horizon's length
        rows, cols = np.nonzero(counts)
        hist_rows.append(rows + start)
        hist_cols.append(cols)
        hist_counts.append(counts[rows, cols])
        rows, cols = np.nonzero(rng.random(lam.shape) < -np.expm1(-lam))
        bought_rows.append(rows + start)
        bought_cols.append(cols)
    rows = np.concatenate(hist_rows)
    indptr = np.zeros(customers + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=customers), out=indptr[1:])
    history = SparseRows(
        indptr, np.concatenate(hist_cols), np.concatenate(hist_counts).astype(np.float32), n_cols
    )
    truth = SparseRows.from_pairs(
        np.concatenate(bought_rows), np.concatenate(bought_cols), customers, n_cols, binary=True
    )
    return x, history, truth


def _train_rounds(
    inputs: np.ndarray, y: np.ndarray, config: DpSgdConfig, rounds: int, seed: int
) -> tuple[torch.nn.Module, list[float], int, float]:
    """(model, seconds per round, steps per round, sample rate) after ``rounds`` rounds."""
    torch.manual_seed(seed)
    model = build_preference_model(inputs.shape[1] - y.shape[1], y.shape[1])
    seconds, steps, rate = [], 0, 0.0
    for _ in range(rounds):
        started = time.perf_counter()
        result = train_dp(model, inputs, y, config)
        seconds.append(time.perf_counter() - started)
        steps, rate = result.steps, result.sample_rate
    return model, seconds, steps, rate


def run(
    customers: int, features: int, categories: int, rounds: int, sigma: float, seed: int
) -> dict[str, object]:
    torch.set_num_threads(1)
    world = planted_world(features, categories, seed)
    x, history, truth = synthetic_store(world, customers, seed + 1)
    x_eval, history_eval, truth_eval = synthetic_store(world, 1_000, seed + 2)
    started = time.perf_counter()
    inputs = preference_inputs(x, history)
    inputs_seconds = time.perf_counter() - started
    eval_inputs = preference_inputs(x_eval, history_eval)
    y = truth.to_dense()
    rss_before_training = _rss_mb()
    config = DpSgdConfig(
        noise_multiplier=sigma,
        max_grad_norm=1.0,
        expected_batch_size=128,
        epochs=1,
        learning_rate=0.01,
        optimizer="adam",
    )
    model, seconds, steps, rate = _train_rounds(inputs, y, config, rounds, seed)
    rss_after_training = _rss_mb()
    started = time.perf_counter()
    ranked = top_k(predict_scores(model, eval_inputs), K)
    score_seconds = time.perf_counter() - started
    with warnings.catch_warnings():  # the reference is non-private on purpose
        warnings.simplefilter("ignore", PrivacyWarning)
        reference, *_ = _train_rounds(
            inputs, y, dataclasses.replace(config, noise_multiplier=0.0), rounds, seed
        )
    ranked_reference = top_k(predict_scores(reference, eval_inputs), K)
    popularity = y.sum(axis=0)  # the store's own label counts
    popular = popularity_ranking(popularity, len(x_eval), K)
    again = own_history_ranking(history_eval, popularity, K)
    return {
        "benchmark": "preference",
        "customers": customers,
        "features": features,
        "categories": categories,
        "input_width": int(inputs.shape[1]),
        "parameters": sum(p.numel() for p in model.parameters()),
        "mean_true_categories": round(float(np.diff(truth.indptr).mean()), 2),
        "noise_multiplier": config.noise_multiplier,
        "max_grad_norm": config.max_grad_norm,
        "expected_batch_size": config.expected_batch_size,
        "optimizer": f"{config.optimizer} lr={config.learning_rate}",
        "sample_rate": round(rate, 5),
        "steps_per_round": steps,
        "rounds": rounds,
        "seconds_per_round": round(float(np.mean(seconds)), 3),
        "seconds_first_round": round(seconds[0], 3),
        "seconds_per_step": round(float(np.mean(seconds)) / steps, 4),
        "inputs_seconds": round(inputs_seconds, 3),
        "score_and_rank_seconds_per_1000": round(score_seconds * 1_000 / len(x_eval), 3),
        f"recall_at_{K}": round(recall_at_k(truth_eval, ranked, K), 4),
        f"recall_at_{K}_no_noise_reference": round(recall_at_k(truth_eval, ranked_reference, K), 4),
        f"recall_at_{K}_popularity": round(recall_at_k(truth_eval, popular, K), 4),
        f"recall_at_{K}_buy_again": round(recall_at_k(truth_eval, again, K), 4),
        f"ndcg_at_{K}": round(ndcg_at_k(truth_eval, ranked, K), 4),
        f"ndcg_at_{K}_popularity": round(ndcg_at_k(truth_eval, popular, K), 4),
        "peak_rss_mb_before_training": round(rss_before_training, 1),
        "peak_rss_mb_after_training": round(rss_after_training, 1),
        "peak_rss_mb": round(_rss_mb(), 1),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
    }


def _recalls(result: dict[str, Any]) -> dict[str, float]:
    return {
        "DP-SGD": result[f"recall_at_{K}"],
        "no noise\n(reference, not private)": result[f"recall_at_{K}_no_noise_reference"],
        "popularity": result[f"recall_at_{K}_popularity"],
        "buy again": result[f"recall_at_{K}_buy_again"],
    }


def markdown(result: dict[str, Any]) -> str:
    """The Markdown report of a ``preference`` result."""
    f = reporting.fmt
    rounds = result["rounds"]
    recall, popular = result[f"recall_at_{K}"], result[f"recall_at_{K}_popularity"]
    lines = [
        "# Local DP-SGD training of the preference model (one store)",
        "",
        reporting.run_header(result, "benchmarks.bench_preference"),
        "",
        f"One synthetic store of {result['customers']:,} customers, {result['features']} "
        f"features, a vocabulary of {result['categories']:,} categories (planted segment "
        f"preferences, Zipf-like popularity; {result['mean_true_categories']} categories bought "
        f"per customer in the horizon). Each round is one local epoch of DP-SGD (σ = "
        f"{result['noise_multiplier']:g}, C = {result['max_grad_norm']:g}, expected batch "
        f"{result['expected_batch_size']}, {result['optimizer']}), {result['torch_threads']} "
        f"torch thread; {rounds} rounds. torch {result['torch']}, Python {result['python']}.",
        "",
        *reporting.table(
            ["measure", "value"],
            [
                ("vocabulary size (categories)", f(result["categories"])),
                ("model input width (features + history)", f(result["input_width"])),
                ("model parameters", f(result["parameters"])),
                (
                    "sample rate q / steps per round",
                    f"{result['sample_rate']} / {result['steps_per_round']}",
                ),
                (f"seconds per round (mean of {rounds})", f(result["seconds_per_round"], 3)),
                ("seconds of the first round", f(result["seconds_first_round"], 3)),
                ("seconds per DP-SGD step", f(result["seconds_per_step"], 4)),
                ("seconds to build the inputs", f(result["inputs_seconds"], 3)),
                (
                    "seconds to score and rank 1,000 customers",
                    f(result["score_and_rank_seconds_per_1000"], 3),
                ),
                (
                    "peak RSS MB before training (`ru_maxrss`)",
                    f(result["peak_rss_mb_before_training"], 1),
                ),
                ("peak RSS MB after training", f(result["peak_rss_mb_after_training"], 1)),
                (
                    "peak RSS MB at the end (incl. the no-noise reference)",
                    f(result["peak_rss_mb"], 1),
                ),
            ],
        ),
        "",
        f"Ranking quality on 1,000 held-out customers after {rounds} rounds (a sanity check, "
        "not a tuned result):",
        "",
        *reporting.table(
            ["ranking", f"recall@{K}", f"NDCG@{K}"],
            [
                ("DP-SGD model", f(recall, 4), f(result[f"ndcg_at_{K}"], 4)),
                (
                    "same training without noise (not private)",
                    f(result[f"recall_at_{K}_no_noise_reference"], 4),
                    "—",
                ),
                (
                    "popularity (the store's label counts)",
                    f(popular, 4),
                    f(result[f"ndcg_at_{K}_popularity"], 4),
                ),
                ("buy again (own history)", f(result[f"recall_at_{K}_buy_again"], 4), "—"),
            ],
        ),
        "",
        "## Findings",
        "",
        f"- A round (one local epoch, {result['steps_per_round']} steps) costs a store "
        f"{result['seconds_per_round']} s on one thread (mean, first round included); the "
        f"first round alone {result['seconds_first_round']} s.",
        f"- Training raises the peak RSS from {result['peak_rss_mb_before_training']} to "
        f"{result['peak_rss_mb_after_training']} MB for a {result['parameters']:,}-parameter "
        f"model over {result['categories']:,} categories.",
        f"- After {rounds} rounds the DP-SGD model's recall@{K} ({recall}) is "
        + (
            f"below the popularity ranking's ({popular}): at these settings the private model "
            "does not yet beat the baseline"
            if recall < popular
            else f"above the popularity ranking's ({popular})"
        )
        + f"; without noise the same training reaches "
        f"{result[f'recall_at_{K}_no_noise_reference']}.",
        "",
    ]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    """Seconds per round, memory and recall@10 of a ``preference`` result."""
    figure = reporting.new_figure(15, 4.4)
    ax_time, ax_mem, ax_rec = figure.subplots(1, 3)
    times = {
        "first round": result["seconds_first_round"],
        f"mean of {result['rounds']} rounds": result["seconds_per_round"],
    }
    bars = ax_time.bar(list(times), list(times.values()), color=["tab:gray", "tab:blue"])
    reporting.label_bars(ax_time, bars, [f"{v:.3f} s" for v in times.values()])
    ax_time.set(
        ylabel="seconds",
        title=f"One round: {result['steps_per_round']} DP-SGD steps, "
        f"{result['seconds_per_step'] * 1000:.0f} ms/step",
    )
    ax_time.margins(y=0.15)

    memory = {
        "before training": result["peak_rss_mb_before_training"],
        "after training": result["peak_rss_mb_after_training"],
        "end (+ reference)": result["peak_rss_mb"],
    }
    bars = ax_mem.bar(list(memory), list(memory.values()), color="tab:red")
    reporting.label_bars(ax_mem, bars, [f"{v:.0f} MB" for v in memory.values()])
    ax_mem.set(ylabel="MB (ru_maxrss)", title="Peak resident memory")
    ax_mem.margins(y=0.15)

    recalls = _recalls(result)
    colors = ["tab:blue", "tab:gray", "tab:orange", "tab:green"]
    bars = ax_rec.bar(list(recalls), list(recalls.values()), color=colors)
    reporting.label_bars(ax_rec, bars, [f"{v:.3f}" for v in recalls.values()])
    ax_rec.set(ylabel=f"recall@{K}", title=f"Held-out recall@{K} after {result['rounds']} rounds")
    ax_rec.tick_params(axis="x", labelsize=8)
    ax_rec.margins(y=0.15)
    figure.suptitle(
        f"Preference model, one store: {result['customers']:,} customers, vocabulary "
        f"{result['categories']:,} categories, {result['parameters']:,} parameters, σ = "
        f"{result['noise_multiplier']:g}; {result['cpus']} CPUs, {result['torch_threads']} thread",
        fontsize=10,
    )
    reporting.save_figure(figure, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=3000)
    parser.add_argument("--features", type=int, default=100)
    parser.add_argument("--categories", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--noise-multiplier", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--render-only", action="store_true", help="Re-render the .md and .png from the JSON."
    )
    args = parser.parse_args()
    if args.render_only:
        reporting.render_existing(NAME, markdown, plot)
        return
    with reporting.RunInfo("benchmarks.bench_preference") as info:
        result = run(
            args.customers,
            args.features,
            args.categories,
            args.rounds,
            args.noise_multiplier,
            args.seed,
        )
    result["run"] = info.summary()
    reporting.write_report(NAME, result, markdown, plot)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
