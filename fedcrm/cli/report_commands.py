"""Compliance report command: ``report`` (GDPR / PIPL audit report of a run, HTML or JSON)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from fedcrm.cli.app import app, user_errors
from fedcrm.cli.console import err_console, out_console

__all__: list[str] = []


def _format(fmt: str | None, out: Path | None) -> str:
    from fedcrm.audit.report import FORMATS
    from fedcrm.errors import ConfigError

    if fmt is not None:
        fmt = fmt.lower()
        if fmt not in FORMATS:
            raise ConfigError(f"unknown --format {fmt!r}; valid: {', '.join(FORMATS)}")
        return fmt
    suffix = out.suffix.lower().lstrip(".") if out is not None else ""
    return "json" if suffix == "json" else "html"


@app.command()
@user_errors
def report(
    run: Path = typer.Argument(
        ..., help="The run directory (holds the coordinator's audit.jsonl)."
    ),
    stores: Path | None = typer.Option(
        None,
        "--stores",
        help="Chain directory of the stores (their audit logs, ledgers and erasure registers).",
    ),
    fmt: str | None = typer.Option(
        None, "--format", help="html or json (default: from --out's suffix, else html)."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Where to write (default: RUN/report.html or RUN/report.json)."
    ),
    controller: str | None = typer.Option(
        None, "--controller", help="The controller (organisation) named in the report."
    ),
    dpo: str | None = typer.Option(
        None, "--dpo", help="The DPO / PIPO contact named in the report."
    ),
) -> None:
    """Write the compliance report of a run; exit 1 when its audit trail does not verify."""
    from fedcrm.audit.report import build_report, default_report_path, write_report

    kind = _format(fmt, out)
    document = build_report(run, stores, controller=controller, dpo=dpo)
    path = write_report(document, out if out is not None else default_report_path(run, kind), kind)
    out_console.print(f"wrote the compliance report ({kind}) to {escape(str(path))}")
    summary = document["summary"]
    if summary["verification_ok"]:
        out_console.print(f"[green]audit verification ok[/]: {escape(summary['verification'])}")
        return
    err_console.print(
        f"[bold red]audit verification FAILED[/]: {escape(summary['verification'])}",
        soft_wrap=True,
    )
    err_console.print("the report was written and says so; see its section 8")
    raise typer.Exit(code=1)
