"""Federated training command: ``train`` (Flower simulation engine on this machine)."""

from __future__ import annotations

import logging
from pathlib import Path

import typer
from rich.table import Table

from fedcrm.cli.app import app, user_errors
from fedcrm.cli.console import out_console, round_progress
from fedcrm.configuration import load_run_config

__all__: list[str] = []


_CHURN_ROWS = (
    ("auc", "federated (DP-SGD in each store, SecAgg+)"),
    ("centralized_auc", "centralized, NON-PRIVATE, pooled data (simulation-only reference)"),
    ("local_only_auc", "local-only: each store alone, same DP budget"),
)


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


@app.command()
@user_errors
def train(
    data: Path = typer.Option(..., "--data", help="Chain directory of store directories."),
    out: Path = typer.Option(..., "--out", help="Run directory to write."),
    config: Path | None = typer.Option(None, "--config", help="Run configuration (TOML)."),
    cutoff: str | None = typer.Option(None, "--cutoff", help="Observation cutoff T."),
    horizon_days: int | None = typer.Option(None, "--horizon-days", min=1),
    epsilon: float | None = typer.Option(None, "--epsilon", help="Per-store target ε."),
    rounds: int | None = typer.Option(None, "--rounds", min=1),
    stores: int | None = typer.Option(None, "--stores", min=1, help="Use the first N stores."),
) -> None:
    """Train the churn model across stores with DP-SGD and SecAgg+ (simulation engine)."""
    from fedcrm.federation import run_federation

    run_config = load_run_config(
        config, cutoff=cutoff, horizon_days=horizon_days, epsilon=epsilon, rounds=rounds
    )
    with round_progress(run_config.training.rounds, "federated rounds") as progress:
        result = run_federation(
            out,
            data,
            stores,
            overrides=run_config.to_flower_run_config(),
            verbose=logging.getLogger().isEnabledFor(logging.DEBUG),  # fedcrm -v train
            on_round=progress,
            on_phase=progress.phase,
        )

    table = Table(title=f"Federated churn model in {out}")
    for col in ("round", "AUC", "loss"):
        table.add_column(col, justify="right")
    for r in result.history:
        auc, loss = (r.get("evaluate") or {}).get("auc"), r.get("loss")
        table.add_row(str(r.get("round", "")), _num(auc), _num(loss, 4))
    out_console.print(table)

    churn = Table(title="Churn AUC on held-out customers")
    churn.add_column("model")
    churn.add_column("AUC", justify="right")
    for key, label in _CHURN_ROWS:
        churn.add_row(label, _num(result.churn.get(key)))
    out_console.print(churn)

    privacy = Table(title=f"Privacy per store (δ ≤ {result.privacy.get('delta')}, PRV)")
    for col in ("store", "ε this run", "target ε", "lifetime ε spent / budget"):
        privacy.add_column(col, justify="left" if col == "store" else "right")
    for label, s in result.privacy.get("stores", {}).items():
        lifetime = f"{_num(s.get('lifetime_spent'), 2)} / {_num(s.get('lifetime_budget'), 2)}"
        privacy.add_row(label, _num(s.get("epsilon")), _num(s.get("budget"), 2), lifetime)
    out_console.print(privacy)

    if result.refusals:
        out_console.print(f"[yellow]{len(result.refusals)} refusal(s)[/], see {out}/refusals.jsonl")
    out_console.print(f"model: {result.model_path}; card: {result.model_card_path}")
    plot = result.plot_path or "not written (see the log)"
    out_console.print(f"plot: {plot}; summary: {out / 'summary.json'}")
    out_console.print(f"wall time: {result.wall_seconds:.0f} s (training, baselines, plot)")
