"""The Typer application and its error edge."""

from __future__ import annotations

import functools
import logging
import os
import warnings
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer
from rich.logging import RichHandler
from rich.text import Text

from fedcrm.cli.console import err_console
from fedcrm.errors import FedcrmError

__all__ = ["app", "main", "user_errors"]

P = ParamSpec("P")
R = TypeVar("R")

app = typer.Typer(
    name="fedcrm",
    help="Privacy-preserving federated analytics for retail CRM.",
    no_args_is_help=True,
    add_completion=False,
    # Locals may hold customer records: never render them in a traceback.
    pretty_exceptions_show_locals=False,
)


def user_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn a :class:`FedcrmError` into a one-line message and exit code 1."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except FedcrmError as exc:
            _one_line_error(str(exc))
            raise typer.Exit(code=1) from None
        except OSError as exc:  # file-system trouble the user can fix: no traceback
            where = f"{exc.filename}: " if exc.filename else ""
            _one_line_error(f"{where}{exc.strerror or exc}")
            raise typer.Exit(code=1) from None

    return wrapper


@app.callback()
def _configure(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details."),
) -> None:
    name = os.environ.get("FEDCRM_LOG_LEVEL", "WARNING").upper()
    level = logging.DEBUG if verbose else logging.getLevelNamesMapping().get(name, logging.WARNING)
    logging.basicConfig(
        level=level,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False, rich_tracebacks=False)],
        force=True,
    )
    _quiet_third_parties()


#: Third-party notices that say nothing to a fedcrm user (fedcrm states what matters itself).
_NOISE = (
    "DEPRECATED FEATURE: The `run_simulation`",  # fedcrm drives the engine deliberately
    "Tip: In future versions of Ray",
)


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not any(noise in text for noise in _NOISE)


def _quiet_third_parties() -> None:
    """Python warnings go through logging (one format, one place); Flower logs once."""
    logging.captureWarnings(True)
    for noise in _NOISE:
        warnings.filterwarnings("ignore", message=f".*{noise}")
    flwr_logger = logging.getLogger("flwr")
    flwr_logger.propagate = False  # Flower prints through its own handler already
    flwr_logger.addFilter(_DropNoise())


def _one_line_error(text: str) -> None:
    message = " ".join(text.split())  # one line, whatever the exception text holds
    err_console.print(Text.assemble(("error:", "bold red"), " ", message), soft_wrap=True)


def main() -> None:
    """Entry point of the ``fedcrm`` script."""
    app()
