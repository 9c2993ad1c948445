"""Validation findings: one problem in one place of one file."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Finding:
    """A problem found in a store file.

    ``row`` is the 1-based data row (the header is not counted; in a CSV without
    multi-line quoted fields the physical line is ``row + 1``). ``row`` is ``None`` for
    file-level problems and ``field`` is ``None`` when no single column is at fault.
    ``message`` never quotes the value of an identifying column.
    """

    file: str
    row: int | None
    field: str | None
    message: str
    severity: Severity = Severity.ERROR

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def describe(self) -> str:
        where = self.file
        if self.row is not None:
            where += f", row {self.row}"
        if self.field is not None:
            where += f", field '{self.field}'"
        return f"{where}: {self.message}"
