"""Store pipeline commands: ``prepare`` (one store) and ``demo`` (the default chain)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import typer
from rich.table import Table

from fedcrm.cli.app import app, user_errors
from fedcrm.cli.console import err_console, out_console, progress_reporter
from fedcrm.clients.preparation import PreparationRequest, PreparedStore, prepare_store
from fedcrm.data.atomic import atomic_file
from fedcrm.data.layout import discover_stores
from fedcrm.models.snapshot import FeatureSpec
from fedcrm.models.vocabulary import CategoryVocabulary

__all__: list[str] = []

DEFAULT_CHAIN = Path("data/chain")


@app.command()
@user_errors
def prepare(
    store: Path = typer.Argument(..., help="A store directory."),
    purpose: str = typer.Option("model_training", "--purpose", help="Consent purpose."),
    cutoff: str | None = typer.Option(
        None, "--cutoff", help="Observation cutoff T (default: end of data minus the horizon)."
    ),
    horizon_days: int = typer.Option(60, "--horizon-days", min=1, help="Label horizon H in days."),
    consent_as_of: str | None = typer.Option(
        None, "--consent-as-of", help="Evaluate consent at this time (default: now)."
    ),
    policy: Path | None = typer.Option(None, "--policy", help="De-identification policy (TOML)."),
    linkage_key: Path | None = typer.Option(
        None, "--linkage-key", help="Federation linkage key file (off by default)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the reports as JSON."),
) -> None:
    """Run one store's boundary and feature pipeline; print what was done (counts only)."""
    request = PreparationRequest(
        cutoff=cutoff,  # type: ignore[arg-type]
        purpose=purpose,
        horizon_days=horizon_days,
        consent_as_of=consent_as_of,  # type: ignore[arg-type]
        policy_path=policy,
        linkage_key_path=linkage_key,
    )
    prepared = prepare_store(store, request)
    if as_json:
        out_console.print_json(json.dumps(_full_report(prepared), default=str))
        return
    _print_prepared(prepared)


@app.command()
@user_errors
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Run directory to write."),
    data: Path = typer.Option(
        DEFAULT_CHAIN, "--data", help="Chain directory (generated if absent)."
    ),
    stores: int = typer.Option(8, "--stores", min=1, help="Stores, when generating."),
    customers_per_store: int = typer.Option(2000, "--customers-per-store", min=1),
    seed: int = typer.Option(7, "--seed"),
    horizon_days: int = typer.Option(60, "--horizon-days", min=1),
) -> None:
    """Generate the default chain if absent, then prepare every store and summarise."""
    started = time.perf_counter()
    if not data.exists():
        from fedcrm.synthetic.chain import ChainParams, generate_chain

        out_console.print(f"generating the default synthetic chain in {data} ...")
        params = ChainParams(stores=stores, customers_per_store=customers_per_store, seed=seed)
        with progress_reporter("generate") as progress:
            generate_chain(data, params, progress=progress)
    roots = discover_stores(data)
    vocabulary = _chain_vocabulary(data)
    spec = FeatureSpec.from_vocabulary(vocabulary) if vocabulary is not None else None
    request = PreparationRequest(horizon_days=horizon_days)
    prepared: list[PreparedStore] = []
    with progress_reporter("prepare") as progress:
        for i, root in enumerate(roots):
            progress("stores", i, len(roots))
            prepared.append(prepare_store(root, request, spec=spec, vocabulary=vocabulary))
        progress("stores", len(roots), len(roots))
    summary = {
        "data": str(data),
        "purpose": request.purpose,
        "horizon_days": horizon_days,
        "stores": {p.store_id: p.summary() for p in prepared},
        "wall_seconds": round(time.perf_counter() - started, 2),
    }
    out.mkdir(parents=True, exist_ok=True)
    with atomic_file(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    _print_chain(prepared)
    out_console.print(f"summary written to {out / 'summary.json'} ({summary['wall_seconds']} s)")


def _chain_vocabulary(data: Path) -> CategoryVocabulary | None:
    """The chain's public category taxonomy (product master data), if the chain declares one."""
    from fedcrm.synthetic.chain import chain_categories

    categories = chain_categories(data)
    return CategoryVocabulary.from_categories(categories) if categories else None


def _print_chain(prepared: list[PreparedStore]) -> None:
    table = Table(
        title="Store pipeline: consent → de-identification → features (counts only)",
        caption="excluded: no consent record / refused / revoked; "
        "stages: new/growing/mature/declining/dormant",
    )
    for col in ("store", "customers", "consented", "excluded", "rows", "churn", "stages"):
        table.add_column(col, justify="left" if col == "store" else "right", overflow="fold")
    for p in prepared:
        c = p.consent
        stages = pd.Series(p.features.lifecycle_stage).value_counts()
        stage_text = "/".join(
            str(int(stages.get(s, 0))) for s in ("new", "growing", "mature", "declining", "dormant")
        )
        churn = f"{p.labels.churn.mean():.1%}" if p.labels is not None and len(p.labels) else "-"
        excluded = f"{c.excluded_no_record}/{c.excluded_refused}/{c.excluded_revoked}"
        table.add_row(
            p.store_id, f"{c.total_customers:,}", f"{c.included:,}", excluded,
            f"{len(p.features.customer_ids):,}", churn, stage_text,
        )  # fmt: skip
    out_console.print(table)


def _print_prepared(p: PreparedStore) -> None:
    _print_chain([p])
    table = Table(
        title=f"De-identification of {p.store_id} (policy {p.deidentification.policy_name})"
    )
    for col in ("table", "column", "action", "output", "rows affected"):
        table.add_column(col)
    for c in p.deidentification.columns:
        table.add_row(
            c.table,
            c.column,
            c.action + (f" ({c.generaliser})" if c.generaliser else ""),
            c.output or "-",
            f"{c.rows_affected:,}",
        )
    out_console.print(table)
    err_console.print(
        f"pseudonym key {p.deidentification.pseudonym_key_id}; "
        f"classification: de-identified, not anonymised (PIPL Art. 73)",
        highlight=False,
    )


def _full_report(p: PreparedStore) -> dict[str, object]:
    return {**p.summary(), "deidentification": p.deidentification.as_dict()}
