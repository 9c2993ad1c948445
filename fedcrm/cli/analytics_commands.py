"""Federated analytics command: ``analytics`` (DP queries across the stores, simulation engine)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from fedcrm.cli.app import app, user_errors
from fedcrm.cli.console import err_console, out_console
from fedcrm.configuration import load_run_config

__all__: list[str] = ["print_release"]


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.0f}"
    return str(value)


def print_release(path: Path, max_rows: int = 25) -> None:
    """Print a query's released table (from its JSON file) as a rich table."""
    document = json.loads(Path(path).read_text(encoding="utf-8"))
    title = f"{document['title']} — ε={document['epsilon_per_store']:g} per store"
    if document.get("status") != "released":
        out_console.print(f"[red]{title}: {document.get('status')}[/] — {document.get('reason')}")
        for store, numbers in document.get("stores", {}).items():
            out_console.print(
                f"  {store}: requested ε={numbers.get('requested_epsilon', float('nan')):.3g}, "
                f"remaining ε={numbers.get('remaining_epsilon', float('nan')):.3g}, "
                f"difference {numbers.get('difference_epsilon', float('nan')):.3g}"
            )
        return
    rows = document["table"]
    table = Table(title=title, caption=(
        f"noise std ≈ {document['noise_std_total']:.1f} per cell · suppressed below "
        f"{document['threshold']:.0f} (k = {document['k']}, 3 noise stds) · "
        f"{len(document['suppressed_cells'])} cell(s) suppressed"
    ))  # fmt: skip
    columns = list(rows[0]) if rows else []
    for col in columns:
        table.add_column(col, justify="left" if col in document["dimensions"] else "right")
    for row in rows[:max_rows]:
        table.add_row(*(_cell(row[c]) for c in columns))
    if len(rows) > max_rows:
        table.add_row(*(["…"] * len(columns)))
    out_console.print(table)


@app.command()
@user_errors
def analytics(
    data: Path = typer.Option(..., "--data", help="Chain directory of store directories."),
    query: list[str] = typer.Option(..., "--query", help="Query name (repeatable)."),
    out: Path = typer.Option(..., "--out", help="Directory for <query>.csv/.json/.png."),
    epsilon: float | None = typer.Option(None, "--epsilon", help="ε per query per store."),
    k: int | None = typer.Option(None, "--k", min=0, help="Suppress cells whose noisy total < k."),
    config: Path | None = typer.Option(None, "--config", help="Run configuration (TOML)."),
    stores: int | None = typer.Option(None, "--stores", min=1, help="Use the first N stores."),
) -> None:
    """Answer DP queries across the stores: noise in each store, sums under SecAgg+."""
    from fedcrm.analytics.queries import QUERY_NAMES
    from fedcrm.errors import ConfigError
    from fedcrm.federation import run_analytics_queries

    unknown = [q for q in query if q not in QUERY_NAMES]
    if unknown:
        raise ConfigError(f"unknown query {unknown[0]!r}; valid: {', '.join(QUERY_NAMES)}")
    run_config = load_run_config(config).to_flower_run_config()
    run_config["analytics-queries"] = ",".join(query)
    if epsilon is not None:
        run_config["analytics-epsilon"] = epsilon
    if k is not None:
        run_config["analytics-k"] = k
    what = f"answering {len(query)} quer{'y' if len(query) == 1 else 'ies'} across the stores"
    with err_console.status(what):
        summary = run_analytics_queries(
            out,
            data,
            stores,
            overrides=run_config,
            verbose=logging.getLogger().isEnabledFor(logging.DEBUG),
        )
    refused = []
    for name, outcome in summary["queries"].items():
        print_release(Path(outcome["json"]))
        if outcome["status"] != "released":
            refused.append(name)
        else:
            out_console.print(f"files: {outcome['csv']}, {outcome['json']}, {outcome['png']}")
    if refused:
        raise typer.Exit(code=1)
