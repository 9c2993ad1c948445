"""Benchmark the accuracy of federated DP analytics: released answer vs the exact pooled answer.

    python -m benchmarks.bench_analytics [--reps 200] [--k 20] [--no-federated-run]
    python -m benchmarks.bench_analytics --render-only

On the demo chain (``fedcrm generate``'s default: 8 stores, 2,000 customers per store on
average, seed 7), generated into a temporary directory:

1. each store's exact counts (:func:`~fedcrm.clients.analytics_agent.store_counts`: the
   analytics-consented population, contributions clipped, no noise, no ledger) are computed
   once per query;
2. a Monte Carlo of the release, for each ε and each number of stores n (the first n stores;
   the exact answer is their sum): every store adds discrete Gaussian noise (OpenDP, the
   pipeline's own sampler) of scale σ = ``plan_noise(ε, δ_store, Δ).scale`` to its counts,
   the noisy vectors are summed and cells whose noisy total is below the pipeline's threshold
   ``suppression_threshold(k, σ_tot)`` = max(k, NOISE_FLOOR_STDS · σ_tot), σ_tot = √(Σ σ²) the
   noise std of a chain-wide total, are suppressed — exactly what the federated pipeline
   computes, because SecAgg+ sums the stores' integer vectors exactly. δ_store is the one a
   fresh store uses: ``default_delta(customers on file)``. Each repetition draws every store's
   noise once; n = 2 and 4 use the first stores' draws of the same repetition. OpenDP's
   sampler cannot be seeded, so figures move slightly per run;
3. one real federated run (``run_analytics_queries``: Flower simulation, SecAgg+) of
   lifecycle_funnel and value_by_lifecycle at ε = 1 across all 8 stores, on a fresh copy of
   the chain (every real run spends the stores' lifetime budget), as the anchor: its noise
   scales and its measured errors against the same exact totals.

Relative error: |released − exact| / exact over released cells with exact > 0. Released cells
whose exact count is 0 have none and are counted apart (``released_empty_cells_per_rep``).
Writes ``benchmarks/results/analytics.json``, ``analytics.md`` (relative error per query x ε)
and ``analytics.png`` (relative error against ε, log axes, and the released share), and prints
a compact summary (``--render-only``: only the .md and .png, from the JSON already there).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import reporting
from fedcrm.analytics.mechanism import discrete_gaussian, plan_noise
from fedcrm.analytics.plan import QueryPlan, context_to_json
from fedcrm.analytics.release import NOISE_FLOOR_STDS, suppression_threshold
from fedcrm.clients.analytics_agent import store_counts
from fedcrm.clients.store_agent import StoreSettings
from fedcrm.data.layout import discover_stores
from fedcrm.data.store import load_store
from fedcrm.privacy.accounting import default_delta
from fedcrm.server.analytics import query_context_for
from fedcrm.server.run_config import FederationConfig
from fedcrm.synthetic.chain import ChainParams, generate_chain

NAME = "analytics"
RESULTS, MARKDOWN, PLOT = reporting.paths(NAME)
QUERIES = (
    "lifecycle_funnel",
    "value_by_lifecycle",
    "lifecycle_by_format",
    "category_shares",
    "cohort_retention",
)
EPSILONS = (0.25, 0.5, 1.0, 2.0, 4.0)
STORE_COUNTS = (2, 4, 8)
WITHIN = 0.05  # "every released cell within 5%"
FEDERATED_QUERIES = ("lifecycle_funnel", "value_by_lifecycle")
FEDERATED_EPSILON = 1.0
_RUN_ID = -7  # a run id no federated run uses (its preparations are cached apart)


def _r(value: float, digits: int = 4) -> float:
    return round(float(value), digits)


def _accuracy(
    exact: np.ndarray, totals: np.ndarray, threshold: float
) -> tuple[dict[str, Any], np.ndarray]:
    """Accuracy figures of ``totals`` (reps × cells) against ``exact``, and each rep's max error.

    A cell is released when its noisy total is at least ``threshold`` (the pipeline's rule).
    """
    released = totals >= threshold
    scored = released & (exact > 0)
    rel = np.abs(totals - exact) / np.where(exact > 0, exact, 1)
    errors = rel[scored]
    per_rep_max = np.where(scored, rel, 0.0).max(axis=1)
    within = np.all(~scored | (rel <= WITHIN), axis=1)
    big = exact >= threshold
    empty = exact == 0
    figures = {
        "released_share": _r(released.mean()),
        "released_share_of_cells_exact_ge_threshold": _r(released[:, big].mean())
        if big.any()
        else None,
        "released_cells_exact_below_threshold_per_rep": _r(released[:, ~big].sum(axis=1).mean(), 3),
        "released_empty_cells_per_rep": _r(released[:, empty].sum(axis=1).mean(), 3),
        "rel_err_median": _r(np.median(errors)) if errors.size else None,
        "rel_err_p95": _r(np.quantile(errors, 0.95)) if errors.size else None,
        "rel_err_max": _r(errors.max()) if errors.size else None,
        "share_reps_all_within_5pct": _r(within.mean()),
    }
    return figures, per_rep_max


def _exact_counts(
    store_dirs: list[Path], context_json: str
) -> tuple[dict[str, list[np.ndarray]], dict[str, Any]]:
    """Per query, each store's exact counts; and each query's cells and bound."""
    counts: dict[str, list[np.ndarray]] = {}
    shapes: dict[str, Any] = {}
    for name in QUERIES:
        plan = QueryPlan(name, 1.0, context=context_json)
        query = plan.query()
        counts[name] = [store_counts(StoreSettings(store_dir=d), plan, _RUN_ID) for d in store_dirs]
        shapes[name] = {"cells": len(query.cells), "l2_sensitivity": float(query.l2_sensitivity)}
    return counts, shapes


def monte_carlo(
    counts: list[np.ndarray], deltas: list[float], l2: float, reps: int, k: int
) -> tuple[list[dict[str, Any]], dict[tuple[float, int], np.ndarray]]:
    """Figures per (ε, n) of one query, and the per-repetition max error of each (ε, n)."""
    rows: list[dict[str, Any]] = []
    maxima: dict[tuple[float, int], np.ndarray] = {}
    n_cells = len(counts[0])
    for epsilon in EPSILONS:
        scales = [plan_noise(epsilon, d, l2).scale for d in deltas]
        noisy = [
            discrete_gaussian(np.tile(c, reps), s).reshape(reps, n_cells)
            for c, s in zip(counts, scales, strict=True)
        ]
        for n in STORE_COUNTS:
            exact = np.sum(counts[:n], axis=0)
            totals = np.sum(noisy[:n], axis=0).astype(np.float64)
            noise_std = float(np.sqrt(np.sum(np.square(scales[:n]))))
            threshold = suppression_threshold(k, noise_std)
            figures, per_rep_max = _accuracy(exact.astype(np.float64), totals, threshold)
            positive = exact[exact > 0]
            rows.append(
                {
                    "epsilon": epsilon,
                    "stores": n,
                    "sigma_per_store": sorted({_r(s) for s in scales[:n]}),
                    "noise_std_total": _r(noise_std),
                    "k": k,
                    "threshold": _r(threshold),
                    "threshold_is_noise_floor": bool(threshold > k),
                    "smallest_exact_cell": int(positive.min()) if positive.size else 0,
                    "noise_std_over_smallest_cell": _r(noise_std / positive.min())
                    if positive.size
                    else None,
                    "median_exact_cell": float(np.median(positive)) if positive.size else 0.0,
                    "cells_exact_below_threshold": int((exact < threshold).sum()),
                    "cells_exact_zero": int((exact == 0).sum()),
                    **figures,
                }
            )
            maxima[(epsilon, n)] = per_rep_max
    return rows, maxima


def federated_run(
    chain: Path,
    workdir: Path,
    exact: dict[str, np.ndarray],
    mc_maxima: dict[str, np.ndarray],
    mc_scales: dict[str, list[float]],
    k: int,
) -> dict[str, Any]:
    """One real run on a fresh copy of ``chain``; its errors against ``exact``."""
    from fedcrm.federation import run_analytics_queries

    copy = workdir / "chain-federated"
    shutil.copytree(chain, copy)
    overrides = {
        "analytics-queries": ",".join(FEDERATED_QUERIES),
        "analytics-epsilon": FEDERATED_EPSILON,
        "analytics-k": k,
        "lifetime-epsilon": 10.0,
        "secagg": True,
    }
    started = time.perf_counter()
    summary = run_analytics_queries(workdir / "out", copy, overrides=overrides)
    wall = time.perf_counter() - started
    out: dict[str, Any] = {
        "queries": list(FEDERATED_QUERIES),
        "epsilon_per_store": FEDERATED_EPSILON,
        "k": k,
        "stores": len(discover_stores(copy)),
        "secure_aggregation": True,
        "wall_seconds": round(wall, 1),
        "results": {},
    }
    for name in FEDERATED_QUERIES:
        outcome = summary["queries"][name]
        if outcome["status"] != "released":
            out["results"][name] = {"status": outcome["status"], "reason": outcome.get("reason")}
            continue
        document = json.loads(Path(outcome["json"]).read_text(encoding="utf-8"))
        values = np.array(
            [np.nan if c["count"] is None else float(c["count"]) for c in document["cells"]]
        )
        truth = exact[name].astype(np.float64)
        scored = ~np.isnan(values) & (truth > 0)
        errors = np.abs(values[scored] - truth[scored]) / truth[scored]
        declared = sorted(float(s["noise_scale"]) for s in document["stores"].values())
        max_error = float(errors.max()) if errors.size else float("nan")
        out["results"][name] = {
            "status": "released",
            "secure_aggregation": document["secure_aggregation"],
            "cells": len(values),
            "released": int((~np.isnan(values)).sum()),
            "noise_std_total": _r(document["noise_std_total"]),
            "k": document["k"],
            "threshold": _r(document["threshold"]),
            "noise_scales_match_monte_carlo": bool(
                np.allclose(declared, sorted(mc_scales[name]), rtol=1e-9)
            ),
            "rel_err_median": _r(np.median(errors)) if errors.size else None,
            "rel_err_max": _r(max_error),
            "all_within_5pct": bool((errors <= WITHIN).all()),
            # where the real run's max error falls among the Monte Carlo's per-rep maxima
            "monte_carlo_quantile_of_max": _r((mc_maxima[name] <= max_error).mean(), 3),
            "query_seconds": outcome.get("seconds"),
        }
    return out


def run(reps: int, k: int, federated: bool, params: ChainParams) -> dict[str, Any]:
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fedcrm-bench-analytics-") as tmp:
        workdir = Path(tmp)
        chain = workdir / "chain"
        started = time.perf_counter()
        generate_chain(chain, params)
        generate_seconds = time.perf_counter() - started
        store_dirs = discover_stores(chain)
        customers = [len(load_store(d).customers) for d in store_dirs]
        deltas = [float(default_delta(n)) for n in customers]
        context = query_context_for(FederationConfig.from_run_config({"data-dir": str(chain)}))
        context_json = context_to_json(context)

        started = time.perf_counter()
        counts, shapes = _exact_counts(store_dirs, context_json)
        exact_seconds = time.perf_counter() - started

        started = time.perf_counter()
        queries: dict[str, Any] = {}
        anchor_maxima: dict[str, np.ndarray] = {}
        anchor_scales: dict[str, list[float]] = {}
        for name in QUERIES:
            l2 = shapes[name]["l2_sensitivity"]
            rows, maxima = monte_carlo(counts[name], deltas, l2, reps, k)
            queries[name] = {**shapes[name], "results": rows}
            anchor_maxima[name] = maxima[(FEDERATED_EPSILON, len(store_dirs))]
            anchor_scales[name] = [plan_noise(FEDERATED_EPSILON, d, l2).scale for d in deltas]
        mc_seconds = time.perf_counter() - started

        real = None
        if federated:
            exact_all = {name: np.sum(counts[name], axis=0) for name in FEDERATED_QUERIES}
            real = federated_run(chain, workdir, exact_all, anchor_maxima, anchor_scales, k)

    return {
        "benchmark": "analytics",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
        },
        "parameters": {
            "chain": {
                "stores": params.stores,
                "customers_per_store": params.customers_per_store,
                "seed": params.seed,
            },
            "epsilons_per_store": list(EPSILONS),
            "store_counts": list(STORE_COUNTS),
            "repetitions": reps,
            "k": k,
            "noise_floor_stds": NOISE_FLOOR_STDS,
            "mechanism": "discrete Gaussian per store (OpenDP), exact sum, suppressed below "
            "max(k, noise_floor_stds * noise_std_total) as in the pipeline",
            "relative_error": "|released - exact| / exact over released cells with exact > 0",
            "within": WITHIN,
        },
        "stores": [
            {"store": d.name, "customers": n, "delta": delta}
            for d, n, delta in zip(store_dirs, customers, deltas, strict=True)
        ],
        "queries": queries,
        "federated_run": real,
        "seconds": {
            "generate": round(generate_seconds, 1),
            "exact_counts": round(exact_seconds, 1),
            "monte_carlo": round(mc_seconds, 1),
            "total": round(time.perf_counter() - began, 1),
        },
    }


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}%"


def summary_lines(result: dict[str, Any]) -> list[str]:
    lines = [
        f"Monte Carlo, {result['parameters']['repetitions']} reps, suppressed below max(k = "
        f"{result['parameters']['k']}, {result['parameters']['noise_floor_stds']:g} σ_tot) "
        "(relative error over released cells: median / p95 / max; released share; all ≤ 5%; "
        "empty cells released per rep)"
    ]
    for name, query in result["queries"].items():
        lines.append(f"{name} ({query['cells']} cells, Δ₂ = {query['l2_sensitivity']:g})")
        for row in query["results"]:
            lines.append(
                f"  ε={row['epsilon']:<4g} n={row['stores']}  σ_tot={row['noise_std_total']:6.2f}  "
                f"thr={row['threshold']:6.2f}  "
                f"{_pct(row['rel_err_median']):>7} {_pct(row['rel_err_p95']):>7} "
                f"{_pct(row['rel_err_max']):>8}  released {_pct(row['released_share']):>7}  "
                f"all≤5% {_pct(row['share_reps_all_within_5pct']):>7}  "
                f"empty {row['released_empty_cells_per_rep']:g}/{row['cells_exact_zero']}"
            )
    real = result["federated_run"]
    if real is not None:
        lines.append(
            f"federated run (SecAgg+, {real['stores']} stores, ε = {real['epsilon_per_store']:g}, "
            f"k = {real['k']}): {real['wall_seconds']} s wall"
        )
        for name, figures in real["results"].items():
            if figures["status"] != "released":
                lines.append(f"  {name}: {figures['status']} ({figures.get('reason')})")
                continue
            lines.append(
                f"  {name}: max {_pct(figures['rel_err_max'])}, median "
                f"{_pct(figures['rel_err_median'])}, released {figures['released']}/"
                f"{figures['cells']}, σ_tot {figures['noise_std_total']:.2f}, threshold "
                f"{figures['threshold']:.2f}, σ as in the "
                f"Monte Carlo: {figures['noise_scales_match_monte_carlo']}, MC quantile of "
                f"its max: {figures['monte_carlo_quantile_of_max']}"
            )
    lines.append(f"seconds: {result['seconds']}")
    return lines


def _rows(result: dict[str, Any], name: str, stores: int) -> list[dict[str, Any]]:
    """The Monte Carlo rows of query ``name`` with ``stores`` stores, by ε."""
    rows = [r for r in result["queries"][name]["results"] if r["stores"] == stores]
    return sorted(rows, key=lambda r: r["epsilon"])


def _all_stores(result: dict[str, Any]) -> int:
    return max(result["parameters"]["store_counts"])


def markdown(result: dict[str, Any]) -> str:
    """The Markdown report of an ``analytics`` result: relative error per query x ε."""
    par = result["parameters"]
    n_all = _all_stores(result)
    within = par["within"]
    cpus = result["machine"]["cpus"]
    header = reporting.run_header(result, "benchmarks.bench_analytics", cpus=cpus)
    lines = [
        "# Federated DP analytics: relative error against ε",
        "",
        header
        + f" Finished {result['date']}; seconds: "
        + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in result["seconds"].items())
        + ".",
        "",
        f"The demo chain ({par['chain']['stores']} stores, {par['chain']['customers_per_store']:,} "
        f"customers per store on average, seed {par['chain']['seed']}). Monte Carlo of the "
        f"release, {par['repetitions']} repetitions per ε: each store adds discrete Gaussian "
        "noise (OpenDP) for its per-store ε to its exact counts, the noisy vectors are summed "
        f"(as SecAgg+ does exactly) and cells below max(k = {par['k']}, "
        f"{par['noise_floor_stds']:g} σ_tot) are suppressed. Relative error: "
        f"{par['relative_error']}. ε is each store's ε for the query (δ = the store's default).",
        "",
        f"## All {n_all} stores",
        "",
        "Relative error over the released cells (median / p95 / max over cells x repetitions); "
        f"released: share of cells x repetitions released; all ≤ {within:.0%}: share of "
        f"repetitions whose every released cell is within {within:.0%}.",
        "",
    ]
    table_rows = []
    for name, query in result["queries"].items():
        for r in _rows(result, name, n_all):
            table_rows.append(
                (
                    f"{name} ({query['cells']} cells)",
                    f"{r['epsilon']:g}",
                    f"{r['noise_std_total']:.1f}",
                    f"{r['threshold']:.1f}",
                    reporting.pct(r["rel_err_median"], 2),
                    reporting.pct(r["rel_err_p95"], 1),
                    reporting.pct(r["rel_err_max"], 0),
                    reporting.pct(r["released_share"], 1),
                    reporting.pct(r["share_reps_all_within_5pct"], 1),
                )
            )
    lines += reporting.table(
        ["query", "ε", "σ_tot", "threshold", "median", "p95", "max", "released",
         f"all ≤ {within:.0%}"],
        table_rows,
    )  # fmt: skip
    lines += [
        "",
        "## Median relative error by number of stores (p95 in brackets)",
        "",
    ]
    counts = par["store_counts"]
    by_n = []
    for name in result["queries"]:
        for epsilon in par["epsilons_per_store"]:
            cells = []
            for n in counts:
                row = next(r for r in _rows(result, name, n) if r["epsilon"] == epsilon)
                cells.append(
                    f"{reporting.pct(row['rel_err_median'], 2)} "
                    f"({reporting.pct(row['rel_err_p95'], 1)})"
                )
            by_n.append((name, f"{epsilon:g}", *cells))
    lines += reporting.table(["query", "ε", *(f"{n} stores" for n in counts)], by_n)
    real = result.get("federated_run")
    if real:
        lines += [
            "",
            f"## A real federated run (SecAgg+, {real['stores']} stores, ε = "
            f"{real['epsilon_per_store']:g}, k = {real['k']}, {real['wall_seconds']} s wall)",
            "",
        ]
        real_rows = []
        for name, r in real["results"].items():
            if r["status"] != "released":
                real_rows.append((name, r["status"], "—", "—", "—", "—", "—"))
                continue
            real_rows.append(
                (
                    name,
                    f"{r['released']}/{r['cells']}",
                    reporting.pct(r["rel_err_median"], 2),
                    reporting.pct(r["rel_err_max"], 1),
                    "yes" if r["all_within_5pct"] else "no",
                    "yes" if r["noise_scales_match_monte_carlo"] else "no",
                    f"{r['monte_carlo_quantile_of_max']:.2f}",
                )
            )
        lines += reporting.table(
            ["query", "released cells", "median", "max", f"all ≤ {within:.0%}",
             "σ as in the Monte Carlo", "Monte Carlo quantile of its max"],
            real_rows,
        )  # fmt: skip
    lines += ["", "## Findings", "", *(f"- {x}" for x in findings(result)), ""]
    return "\n".join(lines)


def findings(result: dict[str, Any]) -> list[str]:
    """Plain statements read off the figures."""
    par = result["parameters"]
    n_all = _all_stores(result)
    within = par["within"]
    out = []
    for name in result["queries"]:
        rows = _rows(result, name, n_all)
        good = [r for r in rows if r["rel_err_p95"] is not None and r["rel_err_p95"] <= within]
        first, last = rows[0], rows[-1]
        text = (
            f"{name}: median relative error {reporting.pct(first['rel_err_median'], 2)} at ε = "
            f"{first['epsilon']:g} → {reporting.pct(last['rel_err_median'], 2)} at ε = "
            f"{last['epsilon']:g} ({n_all} stores); "
        )
        text += (
            f"p95 within {within:.0%} from ε = {good[0]['epsilon']:g}"
            if good
            else f"p95 above {within:.0%} at every ε tried"
        )
        text += f"; released {reporting.pct(first['released_share'], 0)} → "
        text += f"{reporting.pct(last['released_share'], 0)} of cells"
        if last["cells_exact_zero"]:
            cells = result["queries"][name]["cells"]
            text += f" ({last['cells_exact_zero']} of {cells} cells are exactly 0)"
        out.append(text + ".")
    low = [
        (name, r)
        for name in result["queries"]
        for r in _rows(result, name, n_all)
        if r["released_share"] < 0.5 and (r["rel_err_median"] or 0) > 0.2
    ]
    if low:
        name, r = low[0]
        out.append(
            f"Where little is released the error is of the few cells that got through: "
            f"{name} at ε = {r['epsilon']:g} releases {reporting.pct(r['released_share'], 0)} "
            f"of cells, with a median error of {reporting.pct(r['rel_err_median'], 0)} — cells "
            "near the threshold pass when their noise is positive, so read the error with the "
            "released share; 'all ≤ 5%' is vacuously true in a repetition that releases nothing."
        )
    n_min = min(par["store_counts"])
    lower, other = [], []
    for name in result["queries"]:
        pairs = zip(_rows(result, name, n_min), _rows(result, name, n_all), strict=True)
        if all((b["rel_err_median"] or 0) < (a["rel_err_median"] or 0) for a, b in pairs):
            lower.append(name)
        else:
            other.append(name)
    text = (
        f"At every ε, {n_all} stores give a lower median relative error than {n_min} for "
        f"{', '.join(lower) or 'no query'} (the noise std grows as √n, the counts about as n)"
    )
    if other:
        text += (
            f"; not for {', '.join(other)}, whose released cells differ with n (cells exactly 0 "
            f"with {n_min} stores: "
            + ", ".join(
                f"{name} {_rows(result, name, n_min)[0]['cells_exact_zero']}" for name in other
            )
            + ")"
        )
    out.append(text + ".")
    return out


def plot(result: dict[str, Any], path: Path) -> None:
    """Relative error (median, p95) and released share against ε, per query (all stores)."""
    from matplotlib.ticker import NullLocator

    par = result["parameters"]
    n_all = _all_stores(result)
    figure = reporting.new_figure(15, 5.2)
    ax_err, ax_p95, ax_rel = figure.subplots(1, 3)
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    for (name, _query), color in zip(result["queries"].items(), colors, strict=False):
        rows = _rows(result, name, n_all)
        eps = [r["epsilon"] for r in rows]
        ax_err.plot(eps, [r["rel_err_median"] for r in rows], "o-", color=color, label=name)
        ax_p95.plot(eps, [r["rel_err_p95"] for r in rows], "s--", color=color, label=name)
        ax_rel.plot(eps, [r["released_share"] for r in rows], "o-", color=color, label=name)
    real = result.get("federated_run")
    if real:
        for (name, _query), color in zip(result["queries"].items(), colors, strict=False):
            r = real["results"].get(name)
            if r and r["status"] == "released" and r["rel_err_median"] is not None:
                ax_err.plot(
                    [real["epsilon_per_store"]], [max(r["rel_err_median"], 1e-4)], "*",
                    color=color, markersize=14, markeredgecolor="black",
                )  # fmt: skip
        ax_err.plot([], [], "*", color="white", markeredgecolor="black", markersize=12,
                    label="real federated run (median)")  # fmt: skip
    for ax, title in (
        (ax_err, "Median relative error of released cells"),
        (ax_p95, "95th percentile relative error"),
    ):
        ax.axhline(par["within"], color="grey", linestyle=":", linewidth=1)
        ax.text(max(par["epsilons_per_store"]), par["within"] * 1.08, f"{par['within']:.0%}",
                color="grey", fontsize=8, ha="right")  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set(xlabel="ε per store (log)", ylabel="|released − exact| / exact (log)", title=title)
        ax.set_xticks(par["epsilons_per_store"], [f"{e:g}" for e in par["epsilons_per_store"]])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.grid(True, which="major", alpha=0.3)
    ax_err.legend(fontsize=7)
    ax_rel.set_xscale("log")
    ax_rel.set_xticks(par["epsilons_per_store"], [f"{e:g}" for e in par["epsilons_per_store"]])
    ax_rel.xaxis.set_minor_locator(NullLocator())
    ax_rel.set_ylim(0, 1.05)
    ax_rel.set(
        xlabel="ε per store (log)",
        ylabel="share of cells x repetitions released",
        title="Released after suppression",
    )
    ax_rel.grid(True, alpha=0.3)
    ax_rel.legend(fontsize=7)
    figure.suptitle(
        f"Federated DP analytics, {n_all} stores: Monte Carlo of the release "
        f"({par['repetitions']} reps, discrete Gaussian per store, suppressed below max(k = "
        f"{par['k']}, {par['noise_floor_stds']:g} σ_tot)); {result['machine']['cpus']} CPUs",
        fontsize=10,
    )
    reporting.save_figure(figure, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7, help="Chain seed.")
    parser.add_argument(
        "--no-federated-run", action="store_true", help="Skip the real federated run."
    )
    parser.add_argument(
        "--render-only", action="store_true", help="Re-render the .md and .png from the JSON."
    )
    args = parser.parse_args()
    if args.render_only:
        reporting.render_existing(NAME, markdown, plot)
        return
    params = ChainParams(stores=max(STORE_COUNTS), customers_per_store=2000, seed=args.seed)
    with reporting.RunInfo("benchmarks.bench_analytics") as info:
        result = run(args.reps, args.k, not args.no_federated_run, params)
    result["run"] = info.summary()
    reporting.write_report(NAME, result, markdown, plot)
    print("\n".join(summary_lines(result)))


if __name__ == "__main__":
    main()
