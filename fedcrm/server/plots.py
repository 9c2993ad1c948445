"""The training plot of a run (``RUN/training.png``): federated AUC and each store's ε per round.

Drawn from ``summary.json`` alone (aggregate metrics and public DP numbers, no store data)
with matplotlib's Agg canvas: no display, no pyplot global state, safe in any thread.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["PLOT_NAME", "plot_run"]

#: The plot's file name inside the run directory.
PLOT_NAME = "training.png"

_REFERENCES = (
    ("centralized_auc", "centralized, non-private (simulation-only reference)", ":", "tab:red"),
    ("local_only_auc", "local-only, each store alone (same DP budget)", "--", "tab:green"),
)


def plot_run(summary: Mapping[str, Any], path: Path) -> Path:
    """Write the two-panel PNG of ``summary`` to ``path`` (atomically) and return ``path``.

    Left: federated evaluation AUC per round, with the centralized and local-only AUCs of
    ``summary["churn"]`` as labelled horizontal lines when present. Right: ε per round of each
    store in ``summary["privacy"]["stores"]``, with its target ε dashed.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    from fedcrm.data.atomic import atomic_file

    churn: Mapping[str, Any] = summary.get("churn") or {}
    privacy: Mapping[str, Any] = summary.get("privacy") or {}
    figure = Figure(figsize=(11, 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    auc_ax, eps_ax = figure.subplots(1, 2)

    points = [
        (r["round"], (r.get("evaluate") or {}).get("auc")) for r in summary.get("history") or []
    ]
    rounds = [x for x, y in points if y is not None]
    aucs = [y for _, y in points if y is not None]
    auc_ax.plot(rounds, aucs, marker="o", color="tab:blue", label="federated (DP-SGD, SecAgg+)")
    for key, label, style, color in _REFERENCES:
        if churn.get(key) is not None:
            value = float(churn[key])
            auc_ax.axhline(value, linestyle=style, color=color, label=f"{label}: {value:.3f}")
    auc_ax.set(title="Churn AUC, federated evaluation (held-out customers)")
    auc_ax.set(xlabel="round", ylabel="AUC")

    stores: Mapping[str, Mapping[str, Any]] = privacy.get("stores") or {}
    for label, store in stores.items():
        curve = store.get("epsilon_per_round") or []
        eps_ax.plot(range(1, len(curve) + 1), curve, marker=".", label=str(label))
    for budget in sorted({float(s["budget"]) for s in stores.values() if s.get("budget")}):
        eps_ax.axhline(budget, linestyle="--", color="grey", label=f"target ε = {budget:g}")
    delta = privacy.get("delta")
    eps_ax.set(title="ε per store (PRV accountant" + (f", δ ≤ {delta:.2g})" if delta else ")"))
    eps_ax.set(xlabel="round", ylabel="ε", ylim=(0, None))

    for ax in (auc_ax, eps_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small", ncol=1 if len(stores) <= 6 or ax is auc_ax else 2)
    path = Path(path)
    with atomic_file(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    return path
