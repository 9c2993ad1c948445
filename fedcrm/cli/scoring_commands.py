"""Local scoring command: ``score`` (one store, the federation's global churn model)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from fedcrm.cli.app import app, user_errors
from fedcrm.cli.console import err_console, out_console

__all__: list[str] = []


@app.command()
@user_errors
def score(
    run: Path = typer.Option(..., "--run", help="Run directory of `fedcrm train`."),
    store: Path = typer.Option(..., "--store", help="The store directory to score."),
    out: Path = typer.Option(..., "--out", help="CSV file to write (stays in the store)."),
    cutoff: str | None = typer.Option(
        None, "--cutoff", help="Score as of this date (default: the store's end of data)."
    ),
    rules: Path | None = typer.Option(None, "--rules", help="Action rule table (TOML)."),
    purpose: str = typer.Option("analytics", "--purpose", help="Consent purpose to score under."),
    consent_as_of: str | None = typer.Option(
        None, "--consent-as-of", help="Evaluate consent at this time (default: now)."
    ),
    top_k: int = typer.Option(
        10, "--top-k", min=1, help="Categories recommended per customer (preference model)."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output file."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Score one store's consented customers locally; print counts only, write ids to --out."""
    from fedcrm.clients.actions import DEFAULT_RULES, load_rules
    from fedcrm.clients.scoring import check_scores_path, score_store, write_scores

    check_scores_path(out, force=force)  # fail before the work, not after
    scores = score_store(
        run,
        store,
        cutoff=cutoff,
        purpose=purpose,
        rules=load_rules(rules) if rules is not None else DEFAULT_RULES,
        consent_as_of=consent_as_of,
        top_k=top_k,
    )
    write_scores(scores, out, force=force)
    summary = scores.summary()
    if as_json:
        out_console.print_json(json.dumps({**summary, "out": str(out)}))
        return
    _print_summary(summary)
    out_console.print(
        f"scores for {len(scores.frame):,} customers written to {out}", soft_wrap=True
    )
    err_console.print(
        "the file holds customer ids and profiles: personal data, keep it in the store",
        highlight=False,
    )


def _print_summary(s: dict[str, Any]) -> None:
    table = Table(title=f"Scores of {s['store_id']} with model run {s['run_id']} (counts only)")
    table.add_column("group")
    table.add_column("value")
    table.add_column("customers", justify="right")
    for group, key in (
        ("action", "actions"),
        ("stage", "lifecycle_stages"),
        ("tier", "value_tiers"),
    ):
        for value, count in s[key].items():
            table.add_row(group, value, f"{count:,}")
    out_console.print(table)
    c, cal = s["consent"], s["calibration"]
    lines = [
        f"scored: {s['customers_scored']:,} customers who bought before {s['cutoff'][:10]}, "
        f"of {c['included']:,}/{c['total_customers']:,} consenting to {s['purpose']} "
        f"as of {s['consent_as_of'][:16]}; {s['marketing_consent']:,} with marketing consent",
        f"calibration: Platt on {cal['rows']:,} held-out rows at {cal['cutoff']} "
        f"(churn rate {cal['churn_rate']:.1%}): ECE {cal['ece_before']:.4f} → "
        f"{cal['ece_after']:.4f}, Brier {cal['brier_before']:.4f} → {cal['brier_after']:.4f}"
        if cal["applied"]
        else f"calibration: {cal['reason']} (at {cal['cutoff']})",
    ]
    for line in lines:
        out_console.print(line, highlight=False, soft_wrap=True)
