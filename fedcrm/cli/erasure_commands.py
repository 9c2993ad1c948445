"""Erasure commands: ``erase`` (record a request) and ``erasures`` (list the register).

Output never repeats the customer id the operator typed: the customer is "the customer", and
the register shows only a truncated keyed ref.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from fedcrm.cli.app import app, user_errors
from fedcrm.cli.console import out_console
from fedcrm.data.layout import StoreLayout

__all__: list[str] = []


def _store_layout(store: Path) -> StoreLayout:
    from fedcrm.data.layout import is_store_dir
    from fedcrm.errors import ConfigError

    if not is_store_dir(store):
        raise ConfigError(f"{store}: not a store directory (no customers or transactions table)")
    return StoreLayout(store)


def _runs_table(title: str, runs: list[dict]) -> Table:
    table = Table(title=title)
    for col in ("run", "task", "recorded at (UTC)"):
        table.add_column(col)
    for r in runs:
        table.add_row(str(r.get("run_id")), str(r.get("task")), str(r.get("recorded_at") or "–"))
    return table


@app.command()
@user_errors
def erase(
    store: Path = typer.Option(..., "--store", help="The store directory holding the customer."),
    customer: str = typer.Option(..., "--customer", help="The customer's store-local id."),
    reason: str | None = typer.Option(
        None, "--reason", help="Why (at most 200 characters; nothing identifying)."
    ),
    config: Path | None = typer.Option(
        None, "--config", help="Run configuration to name in the retrain command."
    ),
) -> None:
    """Record an erasure request: the customer is excluded from every later run and query."""
    from fedcrm.privacy.erasure import record_erasure, remedy_commands

    layout = _store_layout(store)
    request = record_erasure(layout, customer, reason)
    from fedcrm.clients.store_audit import audit

    audit(
        layout,
        "erasure_request",
        {
            "request_id": request.request_id,
            "customer_ref": request.customer_ref[:16],  # keyed hash prefix, not the id
            "repeat": request.repeat,
            "reason_given": bool(reason),
            "affected_runs": [
                {"run_id": str(r.get("run_id")), "task": str(r.get("task"))}
                for r in request.affected_runs
            ],
            "action": "excluded at the boundary from every later run, query and score",
        },
    )
    again = " (the customer had been erased before; recorded again)" if request.repeat else ""
    out_console.print(
        f"recorded erasure request [bold]{request.request_id}[/] at {request.requested_at} in "
        f"{escape(str(layout.root))}{again}"
    )
    out_console.print(
        "the customer is excluded at this store's boundary from every later run, query and score"
    )
    if request.affected_runs:
        title = "Model versions trained on data that included the customer"
        out_console.print(_runs_table(title, list(request.affected_runs)))
    else:
        out_console.print("no recorded run used the customer's data")
    out_console.print("[bold]Remedy[/]")
    for line in remedy_commands(request.affected_runs, store_dir=layout.root, config=config):
        out_console.print(f"  {escape(line)}", soft_wrap=True)


@app.command()
@user_errors
def erasures(
    store: Path = typer.Option(..., "--store", help="The store directory."),
) -> None:
    """List the store's erasure register (request ids, times, affected runs; no ids)."""
    from fedcrm.privacy.erasure import list_requests

    requests = list_requests(_store_layout(store))
    if not requests:
        out_console.print("the erasure register is empty")
        return
    out_console.print(f"Erasure register of {escape(str(store))}: {len(requests)} request(s)")
    for r in requests:
        runs = ", ".join(f"{a.get('run_id')} ({a.get('task')})" for a in r.affected_runs) or "none"
        repeat = " · repeat" if r.repeat else ""
        out_console.print(
            f"{r.request_id}  {r.requested_at}  ref {r.customer_ref[:12]}…{repeat}  "
            f"affected runs: {escape(runs)}",
            soft_wrap=True,
        )
