"""One store's records in memory, and reading/writing them as a store directory."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from fedcrm.data.contract import (
    CONSENTS,
    CUSTOMERS,
    INTERACTIONS,
    TRANSACTIONS,
    ColumnKind,
    TableContract,
    ValidationLimits,
)
from fedcrm.data.layout import MANIFEST_NAME, StoreLayout

__all__ = ["StoreData", "TableFormat", "empty_table", "load_store", "pandas_dtype", "write_store"]

TableFormat = Literal["parquet", "csv"]

_DTYPES: dict[ColumnKind, str] = {
    ColumnKind.ID: "str",
    ColumnKind.TEXT: "str",
    ColumnKind.TIMESTAMP: "datetime64[ns]",
    ColumnKind.DATE: "datetime64[ns]",
    ColumnKind.FLOAT: "float64",
    ColumnKind.INT: "int64",
    ColumnKind.BOOL: "bool",
}


def pandas_dtype(kind: ColumnKind) -> str:
    """The in-memory pandas dtype of a contract column kind."""
    return _DTYPES[kind]


def empty_table(contract: TableContract, columns: tuple[str, ...] | None = None) -> pd.DataFrame:
    """An empty frame with the contract's columns (or ``columns``) and dtypes."""
    names = columns if columns is not None else contract.required_columns
    return pd.DataFrame({n: pd.Series(dtype=pandas_dtype(contract.column(n).kind)) for n in names})


@dataclass(frozen=True)
class StoreData:
    """A store's tables, typed as the data contract says.

    ``interactions`` is an empty frame when the store has none. Frames hold raw,
    identifying data: they stay inside the store process until they pass the privacy
    boundary (:mod:`fedcrm.privacy`).
    """

    store_id: str
    customers: pd.DataFrame
    transactions: pd.DataFrame
    consents: pd.DataFrame
    interactions: pd.DataFrame = field(default_factory=lambda: empty_table(INTERACTIONS))
    manifest: dict[str, Any] = field(default_factory=dict)

    def tables(self) -> dict[str, pd.DataFrame]:
        return {
            CUSTOMERS.name: self.customers,
            TRANSACTIONS.name: self.transactions,
            INTERACTIONS.name: self.interactions,
            CONSENTS.name: self.consents,
        }

    def __repr__(self) -> str:  # never print frames: they hold PII
        return (
            f"StoreData(store_id={self.store_id!r}, customers={len(self.customers)}, "
            f"transactions={len(self.transactions)}, interactions={len(self.interactions)}, "
            f"consents={len(self.consents)})"
        )


def load_store(
    root: Path, *, now: datetime | None = None, limits: ValidationLimits | None = None
) -> StoreData:
    """Read and validate a store directory.

    Raises :class:`fedcrm.errors.DataValidationError` listing every finding (file, row,
    field) when the directory breaks the contract; nothing is returned half-checked.
    """
    from fedcrm.data.validation import check_store  # validation imports this module

    return check_store(Path(root), now=now, limits=limits).require_data()


def write_store(
    data: StoreData,
    root: Path,
    *,
    fmt: TableFormat = "parquet",
    manifest: dict[str, Any] | None = None,
) -> None:
    """Write ``data`` as a store directory at ``root`` (created if needed).

    Columns are written in contract order; ``interactions`` is skipped when empty.
    Callers wanting all-or-nothing output wrap this in
    :func:`fedcrm.data.atomic.atomic_directory`.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for contract, frame in (
        (CUSTOMERS, data.customers),
        (TRANSACTIONS, data.transactions),
        (INTERACTIONS, data.interactions),
        (CONSENTS, data.consents),
    ):
        if contract is INTERACTIONS and frame.empty:
            continue
        ordered = [c for c in contract.column_names if c in frame.columns]
        extra = [c for c in frame.columns if c not in ordered]
        out = frame[ordered + extra]
        path = root / f"{contract.name}.{fmt}"
        if fmt == "parquet":
            out.to_parquet(path, index=False)
        else:
            out.to_csv(path, index=False, date_format="%Y-%m-%d %H:%M:%S")
    info = {"store_id": data.store_id, **data.manifest, **(manifest or {})}
    (root / MANIFEST_NAME).write_text(
        json.dumps(info, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8"
    )


def layout_of(root: Path) -> StoreLayout:
    return StoreLayout(Path(root))
