"""One chart per released query (PNG), drawn from released cells only.

Suppressed cells are drawn as empty hatched bars labelled "suppressed" (bar charts) or left
blank with a dash (heatmaps), so a reader sees that a cell exists but was not released. Every
chart says in its subtitle what the numbers are: noisy totals of all stores, ε per store and
the suppression threshold k.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["draw_release"]

_MAX_PAIRS = 15


def _figure(width: float = 8.0, height: float = 4.8) -> tuple[Any, Any]:
    """A figure on its own Agg canvas: no pyplot global state, safe in any thread."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def _subtitle(result: Any) -> str:
    return (
        f"noisy totals of {len(result.stores)} stores · ε = {result.epsilon:g} per store · "
        f"noise std ≈ {result.noise_std:.1f} · cells below {result.threshold:.0f} suppressed"
    )


def _label(cell: tuple[str, ...]) -> str:
    return " / ".join(str(part) for part in cell if str(part))


def _bars(ax: Any, labels: list[str], values: np.ndarray, released: np.ndarray) -> None:
    x = np.arange(len(labels))
    shown = np.where(released, values, 0.0)
    ax.bar(x[released], shown[released], color="#3b6ea5")
    top = float(np.nanmax(np.where(released, values, np.nan))) if released.any() else 1.0
    for i in np.flatnonzero(~released):
        ax.bar(x[i], top * 0.05, color="white", edgecolor="#888888", hatch="//")
        ax.text(x[i], top * 0.06, "suppressed", rotation=90, ha="center", va="bottom",
                fontsize=7, color="#666666")  # fmt: skip
    ax.set_xticks(
        x,
        labels,
        rotation=30 if len(labels) > 6 else 0,
        ha="right" if len(labels) > 6 else "center",
    )


def _draw_pairs(ax: Any, table: pd.DataFrame, result: Any) -> None:
    rows = table.dropna(subset=["lift"]).sort_values("lift", ascending=False).head(_MAX_PAIRS)
    if rows.empty:
        ax.text(0.5, 0.5, "no pair released (all below k)", ha="center", va="center")
        ax.set_axis_off()
        return
    dims = [d for d in result.query.dimensions if d in rows.columns and d != "kind"]
    joiner = " → " if "confidence" in rows.columns else " + "  # ordered vs unordered pairs
    labels = [joiner.join(str(r[d]) for d in dims if str(r[d])) for _, r in rows.iterrows()]
    y = np.arange(len(rows))[::-1]
    ax.barh(y, rows["lift"].to_numpy(), color="#3b6ea5")
    ax.axvline(1.0, color="#aa3333", linewidth=1, linestyle="--", label="lift = 1 (independent)")
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel("lift (support of the pair ÷ product of the two shares)")
    ax.legend(loc="lower right", fontsize=8)


def _draw_retention(ax: Any, table: pd.DataFrame, result: Any) -> None:
    dims = result.query.dimensions
    cohort, month = dims[0], dims[1]

    def order(name: object) -> tuple[int, str]:
        text = str(name)  # "T-12" … "T-1" oldest first, or "YYYY-MM"
        return (-int(text[2:]), text) if text.startswith("T-") else (0, text)

    for name, rows in sorted(table.groupby(cohort), key=lambda item: order(item[0])):
        rows = rows.dropna(subset=["retention"])
        if len(rows) > 1:
            ax.plot(rows[month].astype(int), rows["retention"] * 100, marker="o", markersize=3,
                    linewidth=1, label=str(name))  # fmt: skip
    ax.set_xlabel("months since first purchase")
    ax.set_ylabel("customers still buying (% of cohort)")
    ax.set_ylim(0, 105)
    ax.legend(title="first-purchase month", fontsize=7, ncol=2)


def _draw_heatmap(ax: Any, fig: Any, result: Any) -> None:
    q = result.query
    rows = list(dict.fromkeys(cell[0] for cell in q.cells))
    cols = list(dict.fromkeys(cell[1] for cell in q.cells))
    grid = np.full((len(rows), len(cols)), np.nan)
    for cell, value, ok in zip(q.cells, result.totals, result.released, strict=True):
        if ok:
            grid[rows.index(cell[0]), cols.index(cell[1])] = max(0.0, value)
    image = ax.imshow(grid, cmap="Blues", aspect="auto")
    top = np.nanmax(grid) if np.isfinite(grid).any() else 1.0
    for i in range(len(rows)):
        for j in range(len(cols)):
            value = grid[i, j]
            text = "–" if np.isnan(value) else f"{value:,.0f}"
            dark = not np.isnan(value) and value > 0.6 * top
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if dark else "black")  # fmt: skip
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel(q.dimensions[1].replace("_", " "))
    ax.set_ylabel(q.dimensions[0].replace("_", " "))
    fig.colorbar(image, ax=ax, label=f"{q.unit} (noisy)")


def _draw_grouped(ax: Any, table: pd.DataFrame, result: Any) -> None:
    q = result.query
    group, member = q.dimensions[0], q.dimensions[1]
    value = "share" if "share" in table.columns else "count"
    groups = list(dict.fromkeys(cell[0] for cell in q.cells))
    members = list(dict.fromkeys(cell[1] for cell in q.cells))
    width = 0.8 / max(1, len(members))
    for j, m in enumerate(members):
        rows = table[table[member] == m].set_index(group).reindex(groups)
        heights = rows[value].to_numpy(dtype=float) * (100 if value == "share" else 1)
        ax.bar(np.arange(len(groups)) + j * width, np.nan_to_num(heights), width, label=str(m))
    for i, g in enumerate(groups):  # a group with nothing released says so
        if table[table[group] == g][value].isna().all():
            ax.text(i + 0.4 - width / 2, 0, "all cells suppressed", ha="center", va="bottom",
                    fontsize=7, color="#666666", rotation=90)  # fmt: skip
    ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, groups)
    ax.set_xlabel(group.replace("_", " "))
    ax.set_ylabel(f"% of the {group.replace('_', ' ')}'s {q.unit}" if value == "share"
                  else f"{q.unit} (noisy)")  # fmt: skip
    ax.legend(title=member.replace("_", " "), fontsize=8)


def _draw_rates(ax: Any, table: pd.DataFrame) -> None:
    """Churn rate per segment: stages on the x axis, one bar per value tier."""
    stages = list(dict.fromkeys(table["stage"]))
    tiers = list(dict.fromkeys(table["value_tier"]))
    width = 0.8 / max(1, len(tiers))
    for j, tier in enumerate(tiers):
        rows = table[table["value_tier"] == tier].set_index("stage").reindex(stages)
        heights = rows["rate"].to_numpy(dtype=float) * 100
        x = np.arange(len(stages)) + j * width
        ax.bar(x, np.nan_to_num(heights), width, label=f"{tier} value")
        for xi, h in zip(x, heights, strict=True):
            if np.isnan(h):
                ax.text(xi, 1, "–", ha="center", va="bottom", fontsize=8, color="#666666")
    ax.set_xticks(np.arange(len(stages)) + 0.4 - width / 2, stages)
    ax.set_xlabel("lifecycle stage at the cutoff")
    ax.set_ylabel("churned within the horizon (% of segment)")
    ax.legend(title="RFM value tier", fontsize=8)


def _draw_shares(ax: Any, table: pd.DataFrame, result: Any, top: int = 25) -> None:
    """Share of customers per cell (denominator row left out), largest first."""
    dim = result.query.dimensions[0]
    rows = table.dropna(subset=["share"]).sort_values("share", ascending=False).head(top)
    y = np.arange(len(rows))[::-1]
    ax.barh(y, rows["share"].to_numpy(dtype=float) * 100, color="#3b6ea5")
    ax.set_yticks(y, [str(v) for v in rows[dim]], fontsize=8)
    ax.set_xlabel(f"% of {result.query.unit}")
    ax.set_ylabel(dim.replace("_", " "))
    hidden = int(table["share"].isna().sum()) - 1
    if hidden > 0 or len(table.dropna(subset=["share"])) > top:
        note = f"top {len(rows)} shown; {max(hidden, 0)} suppressed"
        ax.text(0.99, 0.01, note, transform=ax.transAxes, ha="right", va="bottom",
                fontsize=7, color="#666666")  # fmt: skip


def draw_release(result: Any, path: Path) -> None:
    """Draw ``result`` (an :class:`~fedcrm.analytics.release.AnalyticsRelease`) to ``path``."""
    q, table = result.query, result.table
    fig, ax = _figure()
    if "lift" in table.columns:
        _draw_pairs(ax, table, result)
    elif "rate" in table.columns and {"stage", "value_tier"} <= set(table.columns):
        _draw_rates(ax, table)
    elif (
        len(q.dimensions) == 1
        and "share" in table.columns
        and table["share"].isna().iloc[0]
        and not table["suppressed"].iloc[0]
    ):  # the first cell is the denominator (customers): shares are the point
        _draw_shares(ax, table, result)
    elif "retention" in table.columns:
        _draw_retention(ax, table, result)
    elif q.chart == "heatmap" and len(q.dimensions) == 2:
        _draw_heatmap(ax, fig, result)
    elif q.chart == "grouped_bar" and len(q.dimensions) == 2:
        _draw_grouped(ax, table, result)
    else:
        _bars(ax, [_label(c) for c in q.cells], result.totals, result.released)
        ax.set_xlabel(" / ".join(d.replace("_", " ") for d in q.dimensions))
        ax.set_ylabel(f"{q.unit} (noisy)")
    fig.suptitle(q.title, fontsize=12)
    ax.set_title(_subtitle(result), fontsize=8, color="#444444")
    fig.savefig(path, format="png")
