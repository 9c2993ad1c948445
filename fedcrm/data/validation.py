"""Checking a store directory against the data contract.

:func:`check_store` reads every table, types every column and runs every rule, collecting
all findings rather than stopping at the first; it returns typed data only when no finding
is an error. Rules: required tables and columns, kinds (text, timestamps, numbers, booleans),
missing values, duplicate keys, negative or implausible amounts and quantities, future or
implausibly old timestamps, impossible birth dates, unknown interaction kinds and consent
purposes, contradictory consent events, orphan customer ids, and file encodings.

Findings name the file, the 1-based data row and the field; they quote values only of
non-identifying columns (amounts, purposes, kinds).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from fedcrm.data.coercion import coerce_column
from fedcrm.data.contract import (
    CONSENTS,
    CUSTOMERS,
    INTERACTION_KINDS,
    INTERACTIONS,
    PURPOSES,
    TABLES,
    TRANSACTIONS,
    ColumnKind,
    TableContract,
    ValidationLimits,
)
from fedcrm.data.findings import Finding, Severity
from fedcrm.data.layout import StoreLayout
from fedcrm.data.membership import text_isin
from fedcrm.data.reading import read_raw_table
from fedcrm.data.store import StoreData, empty_table
from fedcrm.errors import DataError, DataValidationError

__all__ = ["StoreCheck", "check_store"]


@dataclass(frozen=True)
class StoreCheck:
    """The outcome of checking one store directory."""

    root: Path
    store_id: str
    findings: tuple[Finding, ...]
    data: StoreData | None
    row_counts: dict[str, int]

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.is_error]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if not f.is_error]

    @property
    def ok(self) -> bool:
        return self.data is not None

    def require_data(self) -> StoreData:
        """The typed data, or :class:`DataValidationError` listing every finding."""
        if self.data is None:
            n = len(self.errors)
            first = self.errors[0].describe() if self.errors else "unknown problem"
            raise DataValidationError(
                self.findings,
                f"{self.root}: {n} error(s) in the store data; first: {first}",
            )
        return self.data


class _Findings:
    """Collects findings, reporting at most ``cap`` rows per (file, field, problem)."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.items: list[Finding] = []

    def file(
        self, file: str, field: str | None, message: str, severity: Severity = Severity.ERROR
    ) -> None:
        self.items.append(Finding(file, None, field, message, severity))

    def rows(
        self,
        file: str,
        field: str | None,
        mask: np.ndarray | pd.Series,
        message: str | pd.Series,
        severity: Severity = Severity.ERROR,
    ) -> None:
        mask_arr = np.asarray(mask, dtype=bool)
        positions = np.flatnonzero(mask_arr)
        if positions.size == 0:
            return
        for pos in positions[: self.cap]:
            text = message if isinstance(message, str) else str(message.iloc[pos])
            self.items.append(Finding(file, int(pos) + 1, field, text, severity))
        if positions.size > self.cap:
            summary = message if isinstance(message, str) else "same problem"
            self.items.append(
                Finding(
                    file, None, field, f"{positions.size - self.cap} more rows: {summary}", severity
                )
            )

    @property
    def has_errors(self) -> bool:
        return any(f.is_error for f in self.items)


def check_store(
    root: Path, *, now: datetime | None = None, limits: ValidationLimits | None = None
) -> StoreCheck:
    """Check the store directory ``root`` against the contract; never raises for bad data."""
    root = Path(root)
    limits = limits or ValidationLimits()
    now_ts = pd.Timestamp(now) if now is not None else pd.Timestamp.now()
    found = _Findings(limits.max_reported_per_check)
    layout = StoreLayout(root)
    try:
        manifest = layout.read_manifest()
        store_id = str(manifest.get("store_id") or root.name)
    except DataError as exc:
        found.file("store.json", None, str(exc))
        store_id, manifest = root.name, {}

    typed: dict[str, pd.DataFrame | None] = {}
    files: dict[str, str] = {}
    for contract in TABLES.values():
        typed[contract.name], files[contract.name] = _load_table(layout, contract, found)

    _check_rules(typed, files, found, limits, now_ts)
    counts = {name: (0 if frame is None else len(frame)) for name, frame in typed.items()}
    data = None
    if not found.has_errors:
        _finalise_dtypes(typed)
        data = StoreData(
            store_id=store_id,
            customers=_or_empty(typed["customers"], CUSTOMERS),
            transactions=_or_empty(typed["transactions"], TRANSACTIONS),
            interactions=_or_empty(typed["interactions"], INTERACTIONS),
            consents=_or_empty(typed["consents"], CONSENTS),
            manifest=manifest,
        )
    order = {name: i for i, name in enumerate(TABLES)}
    findings = sorted(
        found.items,
        key=lambda f: (order.get(f.file.split(".")[0], len(order)), f.file),
    )
    return StoreCheck(root, store_id, tuple(findings), data, counts)


def _finalise_dtypes(typed: dict[str, pd.DataFrame | None]) -> None:
    """Cast whole-number columns to int64 (kept float while rows could be invalid)."""
    for name, frame in typed.items():
        if frame is None:
            continue
        for column in TABLES[name].columns:
            if column.kind is ColumnKind.INT and column.name in frame.columns:
                if frame[column.name].isna().any():
                    frame[column.name] = frame[column.name].astype("Int64")
                else:
                    frame[column.name] = frame[column.name].astype("int64")


def _or_empty(frame: pd.DataFrame | None, contract: TableContract) -> pd.DataFrame:
    return frame if frame is not None else empty_table(contract)


def _load_table(
    layout: StoreLayout, contract: TableContract, found: _Findings
) -> tuple[pd.DataFrame | None, str]:
    default_name = f"{contract.name}.parquet|csv"
    try:
        path = layout.table_path(contract.name)
    except DataError as exc:
        found.file(default_name, None, str(exc))
        return None, default_name
    if path is None:
        if contract.required:
            found.file(default_name, None, f"missing required table '{contract.name}'")
        return None, default_name
    raw = read_raw_table(path)
    found.items.extend(raw.findings)
    if raw.frame is None:
        return None, path.name
    return _type_table(contract, raw.frame, path.name, found), path.name


def _type_table(
    contract: TableContract, raw: pd.DataFrame, file: str, found: _Findings
) -> pd.DataFrame | None:
    missing_cols = [c for c in contract.required_columns if c not in raw.columns]
    for col in missing_cols:
        found.file(file, col, "required column is missing")
    known = set(contract.column_names)
    for col in raw.columns:
        if col not in known:
            found.file(
                file,
                col,
                "column is not in the data contract; de-identification will refuse it "
                "unless its policy declares it",
                Severity.WARNING,
            )
    if missing_cols:
        return None
    out: dict[str, pd.Series] = {}
    for column in contract.columns:
        if column.name not in raw.columns:
            continue
        coerced = coerce_column(raw[column.name], column.kind)
        found.rows(file, column.name, coerced.invalid, f"not {coerced.expected}")
        if not column.nullable:
            found.rows(file, column.name, coerced.missing, "value is missing")
        out[column.name] = coerced.values
    for col in raw.columns:
        if col not in known:
            out[col] = raw[col].reset_index(drop=True).astype("str")
    return pd.DataFrame(out)


def _check_rules(
    typed: dict[str, pd.DataFrame | None],
    files: dict[str, str],
    found: _Findings,
    limits: ValidationLimits,
    now: pd.Timestamp,
) -> None:
    for name, frame in typed.items():
        if frame is None:
            continue
        contract = TABLES[name]
        file = files[name]
        _check_key(contract, frame, file, found)
        _check_timestamps(contract, frame, file, found, limits, now)
    customers, transactions = typed["customers"], typed["transactions"]
    if transactions is not None:
        _check_transactions(transactions, files["transactions"], found, limits)
    if customers is not None:
        _check_customers(customers, files["customers"], found, limits, now)
    if typed["interactions"] is not None:
        frame = typed["interactions"]
        found.rows(
            files["interactions"],
            "kind",
            frame["kind"].notna() & ~frame["kind"].isin(INTERACTION_KINDS),
            "unknown interaction kind; expected one of " + ", ".join(INTERACTION_KINDS),
        )
    if typed["consents"] is not None:
        _check_consents(typed["consents"], files["consents"], found)
    if customers is not None:
        known_ids = customers["customer_id"].dropna().unique()
        for name in ("transactions", "interactions", "consents"):
            frame = typed[name]
            if frame is None:
                continue
            ids = frame["customer_id"]
            found.rows(
                files[name],
                "customer_id",
                ids.notna().to_numpy() & ~text_isin(ids, known_ids),
                "orphan customer id: not in the customers table",
            )


def _check_key(contract: TableContract, frame: pd.DataFrame, file: str, found: _Findings) -> None:
    if not contract.key:
        return
    keys = frame[list(contract.key)]
    dup = keys.duplicated(keep="first") & keys.notna().all(axis=1)
    if not dup.any():
        return
    first_pos = (
        pd.Series(np.arange(len(frame)) + 1, index=frame.index)
        .groupby([keys[c] for c in contract.key], sort=False, dropna=True)
        .transform("min")
    )
    message = "duplicate key; first seen at row " + first_pos.astype("int64").astype(str)
    found.rows(file, ",".join(contract.key), dup, message)


def _check_timestamps(
    contract: TableContract,
    frame: pd.DataFrame,
    file: str,
    found: _Findings,
    limits: ValidationLimits,
    now: pd.Timestamp,
) -> None:
    latest = now + pd.Timedelta(days=limits.clock_skew_days)
    earliest = pd.Timestamp(limits.earliest_timestamp)
    for column in contract.columns:
        if column.kind is not ColumnKind.TIMESTAMP or column.name not in frame.columns:
            continue
        values = frame[column.name]
        found.rows(
            file,
            column.name,
            values > latest,
            f"timestamp is in the future (after {latest:%Y-%m-%d})",
        )
        found.rows(
            file,
            column.name,
            values < earliest,
            f"implausibly old timestamp (before {earliest:%Y-%m-%d})",
        )


def _check_transactions(
    frame: pd.DataFrame, file: str, found: _Findings, limits: ValidationLimits
) -> None:
    amount = frame["amount"]
    found.rows(file, "amount", amount < 0, "negative amount " + amount.astype(str))
    found.rows(
        file,
        "amount",
        amount > limits.max_line_amount,
        f"implausible amount (above {limits.max_line_amount:,.0f} for one line)",
    )
    quantity = frame["quantity"]
    found.rows(
        file,
        "quantity",
        quantity < 1,
        "quantity must be at least 1 (got " + quantity.astype("Int64").astype(str) + ")",
    )
    found.rows(
        file,
        "quantity",
        quantity > limits.max_quantity,
        f"implausible quantity (above {limits.max_quantity})",
    )
    if "discount" in frame.columns:
        found.rows(file, "discount", frame["discount"] < 0, "negative discount")


def _check_customers(
    frame: pd.DataFrame, file: str, found: _Findings, limits: ValidationLimits, now: pd.Timestamp
) -> None:
    if "birth_date" not in frame.columns:
        return
    birth = frame["birth_date"]
    found.rows(file, "birth_date", birth > now, "birth date is in the future")
    oldest = now - pd.DateOffset(years=limits.max_age_years)
    found.rows(
        file,
        "birth_date",
        birth < oldest,
        f"birth date implies an age above {limits.max_age_years}",
    )


def _check_consents(frame: pd.DataFrame, file: str, found: _Findings) -> None:
    found.rows(
        file,
        "purpose",
        frame["purpose"].notna() & ~frame["purpose"].isin(PURPOSES),
        "unknown purpose; expected one of " + ", ".join(PURPOSES),
    )
    keys = frame[["customer_id", "purpose", "timestamp"]]
    group = frame.groupby([keys[c] for c in keys.columns], sort=False, dropna=True)["granted"]
    conflicting = group.transform("nunique") > 1
    found.rows(
        file,
        "granted",
        conflicting.reindex(frame.index, fill_value=False),
        "contradictory consent events for the same customer, purpose and time",
    )
