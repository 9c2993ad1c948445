"""Deployment PKI commands: ``pki init`` (CA, SuperLink certificate, party keys), ``pki check``."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table
from rich.text import Text

from fedcrm.cli.app import app, user_errors
from fedcrm.cli.console import err_console, out_console
from fedcrm.errors import ConfigError

__all__: list[str] = []

pki_app = typer.Typer(
    name="pki",
    help="Keys and certificates for a multi-site deployment (SuperLink, SuperNodes, audit).",
    no_args_is_help=True,
)
app.add_typer(pki_app, name="pki")


def _store_list(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",")]
    if any(not s for s in names):
        raise ConfigError(f"--stores {text!r}: give comma-separated names such as s00,s01,s02")
    return names


def _unique(default: str, given: list[str]) -> list[str]:
    out = [default]
    for item in given:
        if item not in out:
            out.append(item)
    return out


@pki_app.command("init")
@user_errors
def init(
    out: Path = typer.Option(..., "--out", help="Directory to create (must not exist)."),
    stores: str = typer.Option(..., "--stores", help="Comma-separated store ids, e.g. s00,s01."),
    superlink_host: list[str] = typer.Option(
        [], "--superlink-host", help="DNS name of the SuperLink (added to 'localhost')."
    ),
    superlink_ip: list[str] = typer.Option(
        [], "--superlink-ip", help="IP address of the SuperLink (added to 127.0.0.1)."
    ),
    days: int = typer.Option(365, "--days", help="Certificate validity in days."),
    force: bool = typer.Option(False, "--force", help="Replace OUT if fedcrm pki wrote it."),
) -> None:
    """Create a CA, the SuperLink TLS certificate, SuperNode auth keys and audit keys."""
    from fedcrm.deployment.pki import init_pki

    inventory_path = init_pki(
        out,
        _store_list(stores),
        hosts=_unique("localhost", superlink_host),
        ips=_unique("127.0.0.1", superlink_ip),
        days=days,
        force=force,
    )
    inventory = json.loads(inventory_path.read_text(encoding="utf-8"))

    table = Table(title=f"Deployment keys and certificates in {out}")
    table.add_column("file", overflow="fold")
    table.add_column("owner")
    table.add_column("kind")
    table.add_column("secret")
    table.add_column("public key (SHA-256)")
    for entry in inventory["files"]:
        table.add_row(
            Text(entry["path"]),
            Text(entry["owner"]),
            Text(entry["kind"]),
            Text("SECRET 0600", style="bold red") if entry["secret"] else Text("public"),
            Text(entry["fingerprint"][:16] + "…"),
        )
    out_console.print(table)
    server = inventory["superlink"]
    names = ", ".join([*(f"DNS:{h}" for h in server["hosts"]), *(f"IP:{i}" for i in server["ips"])])
    out_console.print(f"SuperLink certificate names: {names}")
    out_console.print(
        f"[green]written:[/] {len(inventory['files'])} key/certificate files, "
        f"{out / 'inventory.json'} and {out / 'README.txt'} (which file goes where). "
        "Move ca/ca.key offline once the deployment is set up."
    )


@pki_app.command("check")
@user_errors
def check(
    directory: Path = typer.Argument(..., help="A directory written by `fedcrm pki init`."),
    superlink_host: list[str] = typer.Option(
        [], "--superlink-host", help="A DNS name the SuperLink certificate must name."
    ),
    superlink_ip: list[str] = typer.Option(
        [], "--superlink-ip", help="An IP address the SuperLink certificate must name."
    ),
) -> None:
    """Check permissions, key pairs, fingerprints and the certificate chain; exit 1 on problems."""
    from fedcrm.deployment.pki import verify_pki

    problems = verify_pki(
        directory,
        hosts=superlink_host or None,
        ips=superlink_ip or None,
    )
    for problem in problems:
        err_console.print(Text.assemble(("problem:", "bold red"), " ", problem), soft_wrap=True)
    if problems:
        err_console.print(f"[bold red]check failed:[/] {len(problems)} problem(s) in {directory}")
        raise typer.Exit(code=1)
    out_console.print(
        f"[green]ok:[/] {directory}: chain, names, key pairs, fingerprints and permissions"
    )
