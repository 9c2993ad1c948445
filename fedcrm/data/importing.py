"""`fedcrm import`: turn one transactions file (CSV or Parquet) into valid store directories.

The import is all-or-nothing. Everything is read, typed and checked in memory; problems are
reported with the file, the 1-based data row and the source column, never with a customer id.
The stores are written to a staging directory, each one is checked with
:func:`fedcrm.data.validation.check_store`, and only then is the staging directory moved to
``out``; a failed import leaves nothing there.

Consent is never assumed silently: the request names a consent ledger file or declares
``all-granted`` (a grant for every customer and purpose, dated at the earliest timestamp of the
source file and recorded in every store manifest); see :mod:`fedcrm.data.import_consent`.
Row problems (typed and checked in :mod:`fedcrm.data.import_rows`) fail the import unless
``skip_invalid_rows``, which drops those rows and counts them by reason. Consent file problems
always fail: dropping a revocation would grant consent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import pandas as pd

from fedcrm.data.atomic import atomic_directory
from fedcrm.data.contract import CONSENTS, TRANSACTIONS, ValidationLimits
from fedcrm.data.digest import file_sha256
from fedcrm.data.findings import Finding
from fedcrm.data.import_consent import (
    ALL_GRANTED,
    declaration_manifest,
    declared_consents,
    read_consents,
)
from fedcrm.data.import_mapping import ColumnMapping, parse_mapping, read_columns
from fedcrm.data.import_rows import customers_table, parse_rows
from fedcrm.data.store import StoreData, write_store
from fedcrm.data.store_assignment import rows_by_store, split_stores
from fedcrm.data.timestamps import NATIVE
from fedcrm.data.validation import check_store
from fedcrm.errors import ConfigError, DataError, DataValidationError, OutputExistsError

__all__ = [
    "ALL_GRANTED",
    "ColumnMapping",
    "ImportRequest",
    "ImportSummary",
    "StoreSummary",
    "import_transactions",
    "parse_mapping",
]

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ImportRequest:
    """What to import and how. ``store_column`` and ``stores`` are mutually exclusive.

    ``encoding`` applies to every CSV the import reads (source and consent file; default
    UTF-8 with or without a byte-order mark). ``now`` (default: the clock) and ``limits`` set
    the plausibility checks, as in :func:`fedcrm.data.validation.check_store`.
    """

    source: Path
    mapping: ColumnMapping
    date_format: str | None
    store_column: str | None
    stores: int | None
    consent: Path | Literal["all-granted"]
    out: Path
    encoding: str | None = None
    overwrite: bool = False
    skip_invalid_rows: bool = False
    now: datetime | None = None
    limits: ValidationLimits = field(default_factory=ValidationLimits)

    def __post_init__(self) -> None:
        if not isinstance(self.mapping, ColumnMapping):
            raise TypeError("mapping must be a ColumnMapping (see parse_mapping)")
        object.__setattr__(self, "source", Path(self.source))
        object.__setattr__(self, "out", Path(self.out))
        if self.consent != ALL_GRANTED:
            object.__setattr__(self, "consent", Path(self.consent))
        if self.store_column is not None and self.stores is not None:
            raise ConfigError("--store-column and --stores exclude each other; choose one split")
        if self.stores is not None and self.stores < 1:
            raise ConfigError(f"--stores must be at least 1, got {self.stores}")
        mapped_store = self.mapping.source("store")
        if self.stores is not None and mapped_store is not None:
            raise ConfigError(
                "--stores splits customers by hash, but the mapping also names a 'store' "
                "column; drop one of them"
            )
        if self.store_column is not None and mapped_store not in (None, self.store_column.strip()):
            raise ConfigError(
                f"--store-column {self.store_column!r} differs from the mapping's "
                f"store={mapped_store!r}; give the store column once"
            )
        if self.date_format is not None and not self.date_format.strip():
            raise ConfigError("--date-format is empty; omit it to detect the format")

    @property
    def effective_mapping(self) -> ColumnMapping:
        """The mapping with ``store`` set from ``store_column`` when given."""
        if self.store_column is None:
            return self.mapping
        return ColumnMapping({**self.mapping.columns, "store": self.store_column})


@dataclass(frozen=True)
class StoreSummary:
    store_id: str
    directory: str
    customers: int
    transactions: int
    consent_events: int


@dataclass(frozen=True)
class ImportSummary:
    """What an import wrote and dropped."""

    out: Path
    stores: tuple[StoreSummary, ...]
    rows_read: int
    rows_skipped: Mapping[str, int]
    consent_mode: str
    consent_events_unplaced: int
    date_format: str | None
    date_format_detected: bool
    seconds: float

    @property
    def rows_imported(self) -> int:
        return sum(s.transactions for s in self.stores)

    @property
    def total_skipped(self) -> int:
        return sum(self.rows_skipped.values())

    def describe(self) -> str:
        """A few lines for people; no customer data."""
        how = "detected" if self.date_format_detected else "given"
        if self.date_format == NATIVE:
            how = "typed in the file"
        lines = [
            f"imported {self.rows_imported:,} of {self.rows_read:,} rows into "
            f"{len(self.stores)} store(s) in {self.out} ({self.seconds:.1f} s)",
            f"date format: {self.date_format} ({how}); consent: {self.consent_mode}",
        ]
        lines += [
            f"  {s.directory}: {s.customers:,} customers, {s.transactions:,} transactions, "
            f"{s.consent_events:,} consent events"
            for s in self.stores
        ]
        lines += [f"  skipped {n:,} row(s): {reason}" for reason, n in self.rows_skipped.items()]
        if self.consent_events_unplaced:
            lines.append(
                f"  {self.consent_events_unplaced:,} consent event(s) not placed: their customers "
                "bought at no store of the file"
            )
        return "\n".join(lines)


def import_transactions(
    request: ImportRequest, progress: ProgressCallback | None = None
) -> ImportSummary:
    """Import ``request.source`` into store directories under ``request.out``; all or nothing.

    ``progress(stage, done, total)`` is called as stages advance. Raises
    :class:`ImportMappingError`, :class:`DataValidationError` (findings name file, row and
    field), :class:`ConfigError` or :class:`OutputExistsError`; on any error ``out`` is left
    as it was.
    """
    started = time.perf_counter()
    report: ProgressCallback = progress or (lambda stage, done, total: None)
    req = request
    file = req.source.name
    _require_file(req.source, "source file")
    if isinstance(req.consent, Path):
        _require_file(req.consent, "consent file")
    _refuse_existing_output(req.out, req.overwrite)
    now = pd.Timestamp(req.now) if req.now is not None else pd.Timestamp.now()
    mapping = req.effective_mapping

    report("read", 0, 1)
    raw = read_columns(req.source, mapping, req.encoding)
    report("read", 1, 1)
    if raw.empty:
        raise DataValidationError([Finding(file, None, None, "the file has no data rows")])
    report("check", 0, 1)
    tx, problems, ts_format, detected = parse_rows(
        raw, mapping, file=file, date_format=req.date_format, limits=req.limits, now=now
    )
    del raw
    keep = problems.resolve(skip=req.skip_invalid_rows)
    tx = tx.loc[keep].reset_index(drop=True)
    if tx.empty:
        raise DataValidationError(
            [Finding(file, None, None, "every row is invalid and was skipped; nothing to import")]
        )
    consents = (
        read_consents(req.consent, req.encoding, now, req.limits)
        if isinstance(req.consent, Path)
        else None
    )
    report("check", 1, 1)

    split = split_stores(
        tx["customer_id"],
        store_values=tx.get("store"),
        stores=req.stores,
        consent_ids=consents["customer_id"] if consents is not None else None,
    )
    if req.stores is not None and len(split.store_ids) < req.stores:
        logger.warning(
            "%d of %d hash stores received no customer and are not written",
            req.stores - len(split.store_ids),
            req.stores,
        )
    if split.unplaced_events:
        logger.warning(
            "%d consent event(s) not placed: their customers bought at no store of %s",
            split.unplaced_events,
            file,
        )
    earliest = tx["timestamp"].min()
    manifest = _base_manifest(req, split.kind, ts_format, len(keep), problems.skipped, earliest)
    total = len(split.store_ids)
    tx_parts = rows_by_store(split.tx_store, total)
    ce_parts = rows_by_store(split.consent_store, total)
    summaries: list[StoreSummary] = []
    with atomic_directory(req.out, overwrite=req.overwrite) as staging:
        for i, store_id in enumerate(split.store_ids):
            directory = split.directories[i]
            report("write", i, total)
            part = tx.iloc[tx_parts[i]].reset_index(drop=True)
            part["store_id"] = pd.Series(store_id, index=part.index, dtype="str")
            events = None
            if consents is not None:
                events = consents.iloc[split.consent_rows[ce_parts[i]]].reset_index(drop=True)
            customers = customers_table(part, events)
            if events is None:
                events = declared_consents(customers["customer_id"], earliest)
            data = StoreData(
                store_id=store_id,
                customers=customers,
                transactions=part[[c for c in TRANSACTIONS.column_names if c in part.columns]],
                consents=events[list(CONSENTS.column_names)],
            )
            store_manifest = {
                **manifest,
                "name": store_id,
                "provenance": {**manifest["provenance"], "rows_imported": len(part)},
            }
            write_store(data, staging / directory, fmt="parquet", manifest=store_manifest)
            counts = (len(customers), len(part), len(events))
            summaries.append(StoreSummary(store_id, directory, *counts))
        report("write", total, total)
        for i, directory in enumerate(split.directories):
            report("validate", i, total)
            _check_written(staging / directory, file, req)
        report("validate", total, total)

    summary = ImportSummary(
        out=req.out,
        stores=tuple(summaries),
        rows_read=len(keep),
        rows_skipped=MappingProxyType(dict(problems.skipped)),
        consent_mode=ALL_GRANTED if consents is None else "file",
        consent_events_unplaced=split.unplaced_events,
        date_format=ts_format,
        date_format_detected=detected,
        seconds=time.perf_counter() - started,
    )
    logger.info("%s", summary.describe())
    return summary


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise DataError(f"{path}: no such {what}")


def _refuse_existing_output(out: Path, overwrite: bool) -> None:
    """Fail before the work, with the rule :func:`atomic_directory` applies after it."""
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise OutputExistsError(f"{out}: already exists; choose another path or use --force")


# --- manifest and final check --------------------------------------------------------------


def _base_manifest(
    req: ImportRequest,
    split: str,
    date_format: str | None,
    rows_read: int,
    skipped: Mapping[str, int],
    earliest: pd.Timestamp,
) -> dict[str, Any]:
    """The manifest shared by every store of the import (no customer data)."""
    imported_at = datetime.now(UTC).isoformat(timespec="seconds")
    source_sha = file_sha256(req.source)
    provenance: dict[str, Any] = {
        "tool": "fedcrm import",
        "imported_at": imported_at,
        "source_file": req.source.name,
        "source_sha256": source_sha,
        "split": split,
        "split_column": req.effective_mapping.source("store"),
        "hash_stores": req.stores,
        "date_format": date_format,
        "rows_read": rows_read,
        "rows_skipped": dict(skipped),
        "consent_mode": ALL_GRANTED if req.consent == ALL_GRANTED else "file",
    }
    manifest: dict[str, Any] = {"format": "parquet", "provenance": provenance}
    if isinstance(req.consent, Path):
        provenance["consent_file"] = req.consent.name
        provenance["consent_file_sha256"] = file_sha256(req.consent)
    else:
        manifest["consent_declaration"] = declaration_manifest(
            imported_at, req.source.name, source_sha, earliest
        )
    return manifest


def _check_written(root: Path, file: str, req: ImportRequest) -> None:
    """Validate a written store as every loader will; raise before anything is moved."""
    check = check_store(root, now=req.now, limits=req.limits)
    if not check.ok:
        errors = check.errors
        first = errors[0].describe() if errors else "unknown problem"
        raise DataValidationError(
            check.findings,
            f"{root.name}: the store built from {file} breaks the data contract "
            f"({len(errors)} error(s); first: {first}); nothing was written",
        )
