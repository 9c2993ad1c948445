"""Federated training command: ``train`` (Flower simulation engine on this machine)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from fedcrm.cli.app import app, user_errors
from fedcrm.cli.console import out_console
from fedcrm.configuration import load_run_config

__all__: list[str] = []


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
    result = run_federation(out, data, stores, overrides=run_config.to_flower_run_config())
    table = Table(title=f"Federated churn model in {out}")
    for col in ("round", "AUC", "loss"):
        table.add_column(col, justify="right")
    for r in result.rounds:
        auc, loss = (r.get("evaluate") or {}).get("auc"), r.get("loss")
        table.add_row(
            str(r.get("round", "")),
            "-" if auc is None else f"{auc:.3f}",
            "-" if loss is None else f"{loss:.4f}",
        )
    out_console.print(table)
    eps = ", ".join(f"{k} ε={v:.2f}" for k, v in result.epsilon_per_store.items())
    out_console.print(f"achieved: {eps}")
    if result.refusals:
        out_console.print(f"[yellow]{len(result.refusals)} refusal(s)[/], see {out}/refusals.jsonl")
    out_console.print(
        f"model: {result.model_path}; card: {result.model_card_path} ({result.seconds:.0f} s)"
    )
