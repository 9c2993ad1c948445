"""Reading one table file (CSV or Parquet) as raw columns, with encoding checks.

CSV files must be UTF-8 (a byte-order mark is accepted). Every CSV value is read as text so
that ids keep their leading zeros; typing happens in :mod:`fedcrm.data.coercion`.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fedcrm.data.findings import Finding

__all__ = ["RawTable", "read_raw_table"]

_UTF8_BOM = b"\xef\xbb\xbf"


class RawTable:
    """A table as read from disk: a frame of raw columns, or the findings that stopped it."""

    def __init__(self, file: str, frame: pd.DataFrame | None, findings: list[Finding]) -> None:
        self.file = file
        self.frame = frame
        self.findings = findings


def read_raw_table(path: Path) -> RawTable:
    """Read ``path``; on an unreadable file return no frame and a finding saying why."""
    name = path.name
    if path.suffix == ".parquet":
        return _read_parquet(path)
    raw = path.read_bytes()
    text, finding = _decode_utf8(raw, name)
    if finding is not None:
        return RawTable(name, None, [finding])
    if not text.strip():
        return RawTable(name, None, [Finding(name, None, None, "file is empty (no header row)")])
    try:
        frame = pd.read_csv(
            io.StringIO(text),
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            skipinitialspace=False,
        )
    except (pd.errors.ParserError, csv.Error) as exc:
        return RawTable(
            name, None, [Finding(name, None, None, f"malformed CSV: {first_line(exc)}")]
        )
    frame.columns = [str(c).strip() for c in frame.columns]
    dupes = sorted({c for c in frame.columns if list(frame.columns).count(c) > 1})
    if dupes:
        return RawTable(
            name, None, [Finding(name, None, c, "column appears more than once") for c in dupes]
        )
    return RawTable(name, frame, [])


def _read_parquet(path: Path) -> RawTable:
    name = path.name
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        return RawTable(
            name, None, [Finding(name, None, None, f"unreadable Parquet: {first_line(exc)}")]
        )
    frame = table.to_pandas()
    frame.columns = [str(c).strip() for c in frame.columns]
    return RawTable(name, frame, [])


def _decode_utf8(raw: bytes, name: str) -> tuple[str, Finding | None]:
    body = raw[len(_UTF8_BOM) :] if raw.startswith(_UTF8_BOM) else raw
    try:
        return body.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        line = body.count(b"\n", 0, exc.start) + 1
        row = line - 1 if line > 1 else None
        where = f"line {line}" if row is not None else "the header"
        return "", Finding(
            name,
            row,
            None,
            f"not valid UTF-8 (byte 0x{body[exc.start]:02x} in {where}); "
            "re-save the file as UTF-8, or bring it in with `fedcrm import --encoding`",
        )


def first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
