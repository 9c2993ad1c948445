"""Audit commands: ``audit verify`` (chains, signatures and cross-log references)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table
from rich.text import Text

from fedcrm.cli.app import app, user_errors
from fedcrm.cli.console import err_console, out_console

__all__: list[str] = []

audit_app = typer.Typer(
    name="audit",
    help="Tamper-evident audit trail: verify the stores' and the coordinator's logs.",
    no_args_is_help=True,
)
app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
@user_errors
def verify(
    path: Path = typer.Argument(
        ..., help="An audit.jsonl, or a directory (run and/or chain) to search for them."
    ),
    stores: list[Path] = typer.Option(
        [], "--stores", help="Further directory holding referenced logs, e.g. the chain."
    ),
    trusted_key: list[Path] = typer.Option(
        [], "--trusted-key", help="A writer's public key (PEM); only such keys are accepted."
    ),
) -> None:
    """Verify hash chains, signatures and store_head references; exit 1 on any problem."""
    from fedcrm.audit.keys import load_public_key
    from fedcrm.audit.verify import verify_tree

    trusted = [load_public_key(p) for p in trusted_key] if trusted_key else None
    report = verify_tree(path, stores, trusted_keys=trusted)

    table = Table(
        title=f"Audit logs under {path}",
        caption="entries of a failed log: verified before the first problem / lines",
    )
    table.add_column("log", overflow="fold")
    table.add_column("writer")
    table.add_column("entries", justify="right")
    table.add_column("head (seq, hash)")
    table.add_column("status")
    for row in report.logs:
        head = "–" if row["head_hash"] is None else f"{row['head_seq']} {row['head_hash'][:12]}…"
        status = Text("ok", style="green") if row["ok"] else Text("FAILED", style="bold red")
        table.add_row(
            Text(row["path"]),
            Text(str(row["writer"] or "–")),
            f"{row['verified']}/{row['entries']}" if not row["ok"] else str(row["entries"]),
            head,
            status,
        )
    if report.logs:
        out_console.print(table)

    shown: set[Path] = set()
    for finding in report.findings:
        if finding.path in shown:
            continue  # the first problem of each log; later ones usually follow from it
        shown.add(finding.path)
        err_console.print(
            Text.assemble(("problem:", "bold red"), " ", finding.describe()), soft_wrap=True
        )
    if not report.ok:
        more = len(report.findings) - len(shown)
        extra = f" ({more} further finding(s))" if more > 0 else ""
        err_console.print(
            f"[bold red]verification failed:[/] {len(shown)} log(s) with problems{extra}"
        )
        raise typer.Exit(code=1)
    out_console.print(
        f"[green]verified:[/] {len(report.logs)} log(s), chains and signatures intact"
    )
