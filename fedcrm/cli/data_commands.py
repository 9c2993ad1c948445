"""Data commands: ``generate``, ``validate`` and ``import``."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from fedcrm.cli.app import app, user_errors
from fedcrm.cli.console import err_console, out_console, progress_reporter
from fedcrm.data.layout import discover_stores
from fedcrm.data.validation import StoreCheck, check_store

__all__: list[str] = []


@app.command()
@user_errors
def generate(
    out: Path = typer.Option(Path("data/chain"), "--out", help="Directory to create."),
    stores: int = typer.Option(8, "--stores", min=1, help="Number of stores."),
    customers_per_store: int = typer.Option(
        2000, "--customers-per-store", min=1, help="Average customers per store."
    ),
    seed: int = typer.Option(7, "--seed", help="Random seed; the same seed gives the same chain."),
    start: str = typer.Option("2023-01-01", "--start", help="First day of history."),
    end: str = typer.Option("2026-01-01", "--end", help="End of history (exclusive)."),
    fmt: str = typer.Option("parquet", "--format", help="Table format: parquet or csv."),
    force: bool = typer.Option(False, "--force", help="Replace OUT if it exists."),
) -> None:
    """Write a synthetic retail chain: one directory per store, plus ground truth apart."""
    from fedcrm.synthetic.chain import ChainParams, generate_chain

    params = ChainParams(
        stores=stores,
        customers_per_store=customers_per_store,
        seed=seed,
        start=start,
        end=end,
        fmt=fmt,  # type: ignore[arg-type]
    )
    with progress_reporter("generate") as progress:
        summary = generate_chain(out, params, overwrite=force, progress=progress)
    table = Table(title=f"Synthetic chain in {out}")
    for col in ("store", "format", "customers", "transactions", "interactions", "consent events"):
        table.add_column(col, justify="left" if col in ("store", "format") else "right")
    for s in summary.stores:
        table.add_row(
            s.store_id,
            s.format,
            f"{s.customers:,}",
            f"{s.transactions:,}",
            f"{s.interactions:,}",
            f"{s.consent_events:,}",
        )
    out_console.print(table)
    out_console.print(f"{summary.total_rows:,} rows in {summary.seconds:.1f} s")


@app.command()
@user_errors
def validate(
    path: Path = typer.Argument(..., help="A store directory or a chain of store directories."),
    show: int = typer.Option(50, "--show", min=1, help="Findings to list per store."),
    as_json: bool = typer.Option(False, "--json", help="Print findings as JSON."),
) -> None:
    """Check store data against the contract; exit 1 when any error is found."""
    checks = [check_store(root) for root in discover_stores(path)]
    if as_json:
        out_console.print_json(json.dumps([_check_as_dict(c) for c in checks]))
    else:
        for check in checks:
            _print_check(check, show)
    failed = [c for c in checks if not c.ok]
    if failed:
        n = sum(len(c.errors) for c in failed)
        err_console.print(
            f"[bold red]invalid:[/] {n} error(s) in {len(failed)} of {len(checks)} store(s)",
            highlight=False,
        )
        raise typer.Exit(code=1)
    if not as_json:
        out_console.print(f"[bold green]valid:[/] {len(checks)} store(s)", highlight=False)


def _print_check(check: StoreCheck, show: int) -> None:
    counts = ", ".join(f"{n:,} {t}" for t, n in check.row_counts.items())
    mark = "[green]ok[/]" if check.ok else "[red]FAILED[/]"
    out_console.print(f"{mark} [bold]{check.store_id}[/] ({check.root}): {counts}", highlight=False)
    if not check.findings:
        return
    table = Table(show_header=True, header_style="bold")
    for col in ("severity", "file", "row", "field", "problem"):
        table.add_column(col, overflow="fold")
    for f in check.findings[:show]:
        table.add_row(
            f.severity.value, f.file, "" if f.row is None else str(f.row), f.field or "", f.message
        )
    out_console.print(table)
    if len(check.findings) > show:
        out_console.print(f"... {len(check.findings) - show} more findings (use --show)")


def _check_as_dict(check: StoreCheck) -> dict[str, object]:
    return {
        "store_id": check.store_id,
        "path": str(check.root),
        "ok": check.ok,
        "rows": check.row_counts,
        "findings": [
            {
                "severity": f.severity.value,
                "file": f.file,
                "row": f.row,
                "field": f.field,
                "message": f.message,
            }
            for f in check.findings
        ],
    }


@app.command("import")
@user_errors
def import_(
    source: Path = typer.Argument(..., help="Transactions file (CSV or Parquet)."),
    mapping: str = typer.Option(
        ...,
        "--map",
        help="Column mapping TARGET=SOURCE,...: customer_id, timestamp and amount (or "
        "unit_price) are required; optional quantity, category, product_id, channel, store, "
        "age_band, region, transaction_id.",
    ),
    consent: str = typer.Option(
        ...,
        "--consent",
        help="A consent ledger file, or 'all-granted' to declare that every customer consented "
        "(recorded in the ledger and the audit trail).",
    ),
    out: Path = typer.Option(..., "--out", help="Directory of store directories to create."),
    date_format: str | None = typer.Option(
        None, "--date-format", help="strftime format of timestamps."
    ),
    store_column: str | None = typer.Option(
        None, "--store-column", help="Source column naming the store."
    ),
    stores: int | None = typer.Option(
        None, "--stores", min=1, help="Split customers into N stores by hash."
    ),
    encoding: str | None = typer.Option(
        None, "--encoding", help="Source text encoding (default UTF-8)."
    ),
    skip_invalid_rows: bool = typer.Option(
        False,
        "--skip-invalid-rows",
        help="Drop rows that break the contract (counted) instead of failing.",
    ),
    force: bool = typer.Option(False, "--force", help="Replace OUT if it exists."),
) -> None:
    """Turn a transactions file into store directories that satisfy the data contract."""
    from fedcrm.data.importing import ImportRequest, import_transactions, parse_mapping

    request = ImportRequest(
        source=source,
        mapping=parse_mapping(mapping),
        date_format=date_format,
        store_column=store_column,
        stores=stores,
        consent="all-granted" if consent == "all-granted" else Path(consent),
        out=out,
        encoding=encoding,
        overwrite=force,
        skip_invalid_rows=skip_invalid_rows,
    )
    with progress_reporter("import") as progress:
        summary = import_transactions(request, progress=progress)
    out_console.print(summary.describe() if hasattr(summary, "describe") else str(summary))
