"""Store pipeline commands: ``prepare`` (one store) and ``demo`` (the default chain)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import typer
from rich.table import Table

from fedcrm.cli.app import app, user_errors
from fedcrm.cli.console import err_console, out_console, progress_reporter
from fedcrm.clients.preparation import PreparationRequest, PreparedStore, prepare_store
from fedcrm.configuration import load_run_config
from fedcrm.data.atomic import atomic_file
from fedcrm.data.layout import discover_stores
from fedcrm.errors import ConfigError, OutputExistsError

if TYPE_CHECKING:
    from fedcrm.federation import FederationResult

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
    config: Path | None = typer.Option(None, "--config", help="Run configuration (TOML)."),
    store: str | None = typer.Option(
        None, "--store", help="Store directory name to score (default: the first store)."
    ),
    stores: int = typer.Option(8, "--stores", min=1, help="Stores, when generating."),
    customers_per_store: int = typer.Option(2000, "--customers-per-store", min=1),
    seed: int = typer.Option(7, "--seed"),
    rounds: int | None = typer.Option(None, "--rounds", min=1),
    fresh: bool = typer.Option(
        False,
        "--fresh",
        help="Regenerate the synthetic chain (fresh privacy ledgers) and replace a previous "
        "demo run in OUT. Refuses directories fedcrm did not write.",
    ),
) -> None:
    """Generate the default chain if absent, train the churn model, score one store, summarise."""
    from fedcrm.cli.console import round_progress
    from fedcrm.clients.scoring import score_store, write_scores
    from fedcrm.federation import run_federation

    started = time.perf_counter()
    run_config = load_run_config(config, rounds=rounds)  # fail before any work
    if fresh:
        _refuse_non_synthetic(data)
        _clear_previous_run(out)
    if fresh or not data.exists():
        from fedcrm.synthetic.chain import ChainParams, generate_chain

        out_console.print(f"generating the default synthetic chain in {data} ...")
        params = ChainParams(stores=stores, customers_per_store=customers_per_store, seed=seed)
        with progress_reporter("generate") as progress:
            generate_chain(data, params, overwrite=fresh, progress=progress)
    roots = discover_stores(data)
    target = _store_to_score(roots, store)
    total = run_config.training.rounds
    with round_progress(total, "federated DP training") as progress:
        result = run_federation(
            out,
            data,
            overrides=run_config.to_flower_run_config(),
            on_round=progress,
            on_phase=progress.phase,
        )
    scores = score_store(out, target)
    scores_path = out / "scores" / f"{target.name}.csv"
    write_scores(scores, scores_path, force=fresh)
    with atomic_file(scores_path.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(scores.summary(), indent=2, default=str) + "\n", "utf-8")
    _print_demo(result, target.name, scores.summary())
    _print_audit(out, data)
    out_console.print(
        f"demo finished in {time.perf_counter() - started:.0f} s: run in {out} "
        f"(summary.json, training.png, model card); the store's scores, with its own "
        f"customer ids, in {scores_path}"
    )


def _print_audit(run: Path, chain: Path) -> None:
    """Write the run's compliance report (it verifies the audit trail of the coordinator and
    the stores) and say what the verification found."""
    from fedcrm.audit.report import build_report, write_report

    document = build_report(run, chain)
    path = write_report(document, run / "report.html", "html")
    write_report(document, run / "report.json", "json")
    out_console.print(f"compliance report: {path} (and report.json)")
    integrity = document["audit_integrity"]
    logs = integrity["logs"]
    entries = sum(int(log["entries"]) for log in logs)
    if integrity["ok"]:
        out_console.print(
            f"audit trail: {len(logs)} logs, {entries:,} signed entries, chains, "
            f"signatures and the stores' pinned heads intact (fedcrm audit verify {run} "
            f"--stores {chain})"
        )
        return
    first = integrity["findings"][0] if integrity["findings"] else "unknown problem"
    out_console.print(f"[red]audit trail verification failed[/]: {first}")


def _store_to_score(roots: list[Path], name: str | None) -> Path:
    if name is None:
        return roots[0]
    for root in roots:
        if root.name == name:
            return root
    raise ConfigError(
        f"--store {name}: no such store; the chain has {', '.join(r.name for r in roots)}"
    )


def _refuse_non_synthetic(data: Path) -> None:
    """``--fresh`` may replace a generated chain, never a store's real (imported) data."""
    import json

    from fedcrm.synthetic.chain import CHAIN_MANIFEST

    if not data.exists():
        return
    manifest = data / CHAIN_MANIFEST
    generator = None
    if manifest.is_file():
        try:
            generator = json.loads(manifest.read_text(encoding="utf-8")).get("generator")
        except (ValueError, AttributeError):
            generator = None
    if generator != "fedcrm.synthetic":
        raise OutputExistsError(
            f"{data}: not a generated synthetic chain ({CHAIN_MANIFEST} does not name the "
            "fedcrm.synthetic generator; an imported chain declares its categories there "
            "too); --fresh only regenerates synthetic data"
        )


def _clear_previous_run(out: Path) -> None:
    """Remove a previous run in ``out``; refuse a directory that does not look like one."""
    if not out.exists():
        return
    from fedcrm.server.checkpoints import RunDirectory

    if not out.is_dir() or not RunDirectory(out, ()).holds_run():
        raise OutputExistsError(
            f"{out}: exists and does not hold a fedcrm run; refusing to replace it with --fresh"
        )
    shutil.rmtree(out)


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _print_demo(result: FederationResult, store: str, scoring: dict[str, Any]) -> None:
    summary = json.loads((result.run_dir / "summary.json").read_text(encoding="utf-8"))
    churn = summary.get("churn") or {}
    table = Table(title="Churn model: AUC on held-out customers")
    table.add_column("model")
    table.add_column("AUC", justify="right")
    rows = (
        ("federated, DP-SGD + SecAgg+ (this run)", churn.get("auc")),
        (
            "centralized, pooled, non-private (simulation-only reference)",
            churn.get("centralized_auc"),
        ),
        ("local-only, each store alone, same DP budget", churn.get("local_only_auc")),
    )
    for label, auc in rows:
        table.add_row(label, _number(auc, 3))
    out_console.print(table)
    preference = summary.get("preference") or {}
    if preference.get("skipped"):
        out_console.print(f"preference model skipped: {preference['skipped']}")
    elif preference:
        k = preference.get("k", 10)
        ranking = Table(title=f"Preference model: recall@{k} on held-out customers")
        ranking.add_column("model")
        ranking.add_column(f"recall@{k}", justify="right")
        for label, key in (
            ("federated, DP-SGD + SecAgg+ (this run)", f"recall_at_{k}"),
            ("centralized, pooled, non-private (simulation-only)", f"centralized_recall_at_{k}"),
            (
                "own history ('buy again', then popular), in each store",
                f"own_history_recall_at_{k}",
            ),
            ("popularity, in each store", f"popularity_recall_at_{k}"),
        ):
            ranking.add_row(label, _number(preference.get(key), 3))
        out_console.print(ranking)
    privacy = summary.get("privacy") or {}
    eps = Table(title=f"Privacy per store (δ = {privacy.get('delta')})")
    for col in ("store", "ε this run", "target ε", "lifetime spent / budget"):
        eps.add_column(col, justify="left" if col == "store" else "right")
    for name, s in (privacy.get("stores") or {}).items():
        eps.add_row(
            name,
            _number(s.get("epsilon"), 3),
            _number(s.get("budget"), 3),
            f"{_number(s.get('lifetime_spent'), 2)} / {_number(s.get('lifetime_budget'), 2)}",
        )
    out_console.print(eps)
    for outcome in (summary.get("analytics") or {}).values():
        from fedcrm.cli.analytics_commands import print_release

        print_release(Path(outcome["json"]))
    actions = Table(title=f"Local scoring of {store} (counts only)")
    actions.add_column("action")
    actions.add_column("customers", justify="right")
    for action, count in (scoring.get("actions") or {}).items():
        actions.add_row(str(action), f"{int(count):,}")
    out_console.print(actions)


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
