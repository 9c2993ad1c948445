"""The ``--map`` of ``fedcrm import``, and reading the mapped columns of a source file.

A mapping is written ``TARGET=SOURCE,...``, e.g.
``customer_id=CustomerID,timestamp=InvoiceDate,unit_price=UnitPrice,quantity=Quantity``.
Targets are a closed set (:data:`TARGETS`); source names are matched after stripping
surrounding whitespace (and a stray byte-order mark) from both sides.

Source files are Parquet (recognised by content, not name) or delimited text: UTF-8 by default
(a byte-order mark is accepted) or the given encoding, ``,`` ``;`` tab or ``|`` separated
(chosen from the header line), RFC 4180 quoting (separators and newlines inside quotes).
Every CSV value is read as text, so ids keep their leading zeros; a row with more fields than
the header is refused.
"""

from __future__ import annotations

import codecs
import csv
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fedcrm.data.findings import Finding
from fedcrm.data.reading import first_line
from fedcrm.errors import ConfigError, DataValidationError, ImportMappingError

__all__ = [
    "REQUIRED_TARGETS",
    "TARGETS",
    "ColumnChooser",
    "ColumnMapping",
    "parse_mapping",
    "read_columns",
    "read_table",
]

#: Given a file's header, the columns to read: output name -> the file's column name.
ColumnChooser = Callable[[list[str]], Mapping[str, str]]

#: Every mapping target and what it feeds.
TARGETS: Mapping[str, str] = MappingProxyType(
    {
        "customer_id": "transactions.customer_id and customers.customer_id (required)",
        "timestamp": "transactions.timestamp (required)",
        "amount": "transactions.amount: amount paid for the line (required, or unit_price)",
        "unit_price": "price of one unit; amount = quantity x unit_price",
        "quantity": "transactions.quantity (default 1)",
        "category": "transactions.category (default empty)",
        "product_id": "transactions.product_id (default empty)",
        "channel": "transactions.channel (default empty)",
        "store": "the store that made the sale: splits the file into one store per value",
        "age_band": "customers.age_band: latest non-empty value per customer",
        "region": "customers.region: latest non-empty value per customer",
        "transaction_id": "transactions.transaction_id (default: 'row-<source row number>')",
    }
)

#: Targets every mapping needs (``amount`` may be replaced by ``unit_price``).
REQUIRED_TARGETS: tuple[str, ...] = ("customer_id", "timestamp")


def _clean(name: str) -> str:
    return name.replace("\ufeff", "").strip()


@dataclass(frozen=True)
class ColumnMapping:
    """Target field -> source column name; validated when built."""

    columns: Mapping[str, str]

    def __post_init__(self) -> None:
        cleaned = {_clean(t): _clean(s) for t, s in dict(self.columns).items()}
        unknown = sorted(t for t in cleaned if t not in TARGETS)
        if unknown:
            raise ImportMappingError(
                f"unknown mapping target(s): {', '.join(unknown)}; "
                f"valid targets: {', '.join(TARGETS)}"
            )
        empty = sorted(t for t, s in cleaned.items() if not s)
        if empty:
            raise ImportMappingError(
                f"mapping target(s) without a source column: {', '.join(empty)}"
            )
        missing = [t for t in REQUIRED_TARGETS if t not in cleaned]
        if "amount" not in cleaned and "unit_price" not in cleaned:
            missing.append("amount (or unit_price)")
        if missing:
            raise ImportMappingError(
                f"the mapping lacks required target(s): {', '.join(missing)}; "
                "e.g. --map customer_id=CustomerID,timestamp=InvoiceDate,amount=Total"
            )
        if "amount" in cleaned and "unit_price" in cleaned:
            raise ImportMappingError(
                "map either amount (the line total) or unit_price (amount = quantity x "
                "unit_price), not both"
            )
        object.__setattr__(self, "columns", MappingProxyType(cleaned))

    def source(self, target: str) -> str | None:
        """The source column feeding ``target``, or None when it is not mapped."""
        if target not in TARGETS:
            raise KeyError(f"unknown target {target!r}; valid: {', '.join(TARGETS)}")
        return self.columns.get(target)

    def resolve(self, file_columns: Iterable[str], file_name: str) -> dict[str, str]:
        """Target -> the file's own column name, checked against the file's header.

        Raises :class:`ImportMappingError` naming every mapped column the file lacks (or
        holds twice) and listing the columns it does have.
        """
        raw = list(file_columns)
        by_clean: dict[str, list[str]] = {}
        for name in raw:
            by_clean.setdefault(_clean(str(name)), []).append(name)
        listing = ", ".join(repr(_clean(str(c))) for c in raw)
        missing = sorted({s for s in self.columns.values() if s not in by_clean})
        if missing:
            hints = _case_hints(missing, by_clean)
            raise ImportMappingError(
                f"{file_name}: mapped column(s) not in the file: {', '.join(map(repr, missing))}"
                f"{hints}; the file's columns are: {listing}"
            )
        twice = sorted({s for s in self.columns.values() if len(by_clean[s]) > 1})
        if twice:
            raise ImportMappingError(
                f"{file_name}: column(s) {', '.join(map(repr, twice))} appear more than once "
                "in the header; rename one"
            )
        return {target: by_clean[source][0] for target, source in self.columns.items()}


def _case_hints(missing: list[str], available: Mapping[str, list[str]]) -> str:
    lowered = {name.casefold(): name for name in available}
    hints = [f"{m!r} -> {lowered[m.casefold()]!r}" for m in missing if m.casefold() in lowered]
    return f" (did you mean {', '.join(hints)}? names are case-sensitive)" if hints else ""


def parse_mapping(text: str) -> ColumnMapping:
    """Parse ``TARGET=SOURCE,...`` into a validated :class:`ColumnMapping`.

    Source names may not contain ``,`` or ``=``; surrounding whitespace is ignored.
    """
    pairs: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        target, sep, source = item.partition("=")
        target = _clean(target)
        if not sep:
            raise ImportMappingError(
                f"mapping item {item.strip()!r} is not TARGET=SOURCE (e.g. customer_id=CustomerID)"
            )
        if target in pairs:
            raise ImportMappingError(f"mapping target {target!r} is given more than once")
        pairs[target] = source
    if not pairs:
        raise ImportMappingError(
            "the mapping is empty; e.g. --map customer_id=CustomerID,timestamp=InvoiceDate,"
            "amount=Total"
        )
    return ColumnMapping(pairs)


def read_columns(path: Path, mapping: ColumnMapping, encoding: str | None) -> pd.DataFrame:
    """The mapped columns of ``path``, named by target (raw: text for CSV, native for Parquet)."""
    return read_table(path, encoding, lambda header: mapping.resolve(header, path.name))


def read_table(path: Path, encoding: str | None, choose: ColumnChooser) -> pd.DataFrame:
    """Read the columns ``choose`` picks from ``path``'s header, renamed as it says.

    Raises :class:`DataValidationError` for unreadable files (naming the line of a byte that
    is not in the encoding), :class:`ConfigError` for an unknown encoding, and whatever
    ``choose`` raises for a header it cannot map.
    """
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic == b"PAR1":
        return _read_parquet(path, choose)
    if magic == b"PK\x03\x04":
        raise _unreadable(path, "this is a zip or Excel workbook; save it as CSV first")
    return _read_csv(path, encoding, choose)


def _read_parquet(path: Path, choose: ColumnChooser) -> pd.DataFrame:
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        raise _unreadable(path, f"unreadable Parquet: {first_line(exc)}") from exc
    chosen = choose(list(schema.names))
    try:
        table = pq.read_table(path, columns=sorted(set(chosen.values())))
    except (pa.ArrowException, OSError) as exc:
        raise _unreadable(path, f"unreadable Parquet: {first_line(exc)}") from exc
    frame = table.to_pandas(date_as_object=False)
    return pd.DataFrame({target: frame[name] for target, name in chosen.items()})


def _read_csv(path: Path, encoding: str | None, choose: ColumnChooser) -> pd.DataFrame:
    enc = encoding.strip() if encoding else "utf-8-sig"
    try:
        codecs.lookup(enc)
    except LookupError as exc:
        raise ConfigError(
            f"unknown encoding {encoding!r} (e.g. utf-8, gbk, gb18030, latin-1)"
        ) from exc
    try:
        sep = _delimiter(path, enc)
        header = pd.read_csv(path, sep=sep, encoding=enc, dtype=str, skipinitialspace=True, nrows=0)
        chosen = choose(_unmangled(path, sep, enc, [str(c) for c in header.columns]))
        # All columns, not usecols: only a full read refuses rows with too many fields (an
        # unquoted separator inside a value), which would otherwise shift values silently.
        frame = pd.read_csv(
            path,
            sep=sep,
            encoding=enc,
            dtype=str,
            skipinitialspace=True,
            keep_default_na=False,
            na_filter=False,
        )
    except UnicodeDecodeError:
        raise _decode_error(path, enc) from None
    except pd.errors.EmptyDataError:
        raise _unreadable(path, "the file is empty (no header row)") from None
    except (pd.errors.ParserError, csv.Error) as exc:
        hint = "; is a value holding the separator unquoted?" if "Expected" in str(exc) else ""
        raise _unreadable(path, f"malformed CSV: {first_line(exc)}{hint}") from None
    return pd.DataFrame({target: frame[name] for target, name in chosen.items()})


def _unmangled(path: Path, sep: str, encoding: str, names: list[str]) -> list[str]:
    """``names`` (pandas' header, which renames a repeated ``cid`` to ``cid.1``) with repeated
    names restored, so a mapping onto a column the header holds twice is refused."""
    first = pd.read_csv(
        path,
        sep=sep,
        encoding=encoding,
        dtype=str,
        skipinitialspace=True,
        header=None,
        nrows=1,
        keep_default_na=False,
        na_filter=False,
    )
    raw = [str(v) for v in first.iloc[0]] if len(first) else []
    if len(raw) != len(names):
        return names
    counts = pd.Series(raw).value_counts()
    return [r if counts[r] > 1 else m for r, m in zip(raw, names, strict=True)]


def _delimiter(path: Path, encoding: str) -> str:
    with open(path, encoding=encoding, newline="") as fh:
        first = fh.readline()
    unquoted = re.sub(r'"[^"]*"', "", first)
    counts = {d: unquoted.count(d) for d in (",", ";", "\t", "|")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _decode_error(path: Path, encoding: str) -> DataValidationError:
    data = path.read_bytes()
    try:
        data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        byte = data[exc.start]
        where = f"line {line}" if line > 1 else "the header"
        return DataValidationError(
            [
                Finding(
                    path.name,
                    line - 1 if line > 1 else None,
                    None,
                    f"not valid {encoding} (byte 0x{byte:02x} in {where}); pass --encoding with "
                    "the file's encoding (e.g. gbk, gb18030, latin-1)",
                )
            ]
        )
    return _unreadable(path, f"cannot be decoded as {encoding}")


def _unreadable(path: Path, message: str) -> DataValidationError:
    return DataValidationError([Finding(path.name, None, None, message)])
