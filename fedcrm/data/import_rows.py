"""Typing and checking the rows of an import source file, and the problems found in them.

:func:`parse_rows` types every mapped column of the source file (ids and text stripped, dates
through :func:`fedcrm.data.timestamps.parse_timestamp_column`, amounts such as ``¥1,234.50`` or
``(12.00)`` through :func:`parse_money`) and flags every row problem in a fixed order:
unparseable values, negative amounts, zero or negative quantities as found in returns and
cancellations, values outside :class:`~fedcrm.data.contract.ValidationLimits`, duplicate
transaction ids. :class:`RowProblems` collects them; each row is counted under its first problem,
and findings name the file, the 1-based data row and the source column, never a cell value.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import numpy as np
import pandas as pd

from fedcrm.data.coercion import coerce_column
from fedcrm.data.contract import ColumnKind, ValidationLimits
from fedcrm.data.findings import Finding
from fedcrm.data.import_mapping import ColumnMapping
from fedcrm.data.timestamps import parse_timestamp_column
from fedcrm.errors import DataValidationError

__all__ = [
    "CUSTOMER_TEXT",
    "TX_TEXT",
    "RowProblems",
    "customers_table",
    "number_values",
    "parse_money",
    "parse_rows",
    "text_values",
]

logger = logging.getLogger(__name__)

TX_TEXT = ("category", "product_id", "channel")
CUSTOMER_TEXT = ("age_band", "region")


class RowProblems:
    """Row problems of one file, in check order; each row is counted under its first one."""

    def __init__(self, file: str, rows: int, cap: int, skippable: bool) -> None:
        self.file = file
        self.cap = cap
        self.skippable = skippable
        self.bad = np.zeros(rows, dtype=bool)
        self.items: list[tuple[str, str, np.ndarray]] = []
        self.skipped: dict[str, int] = {}

    def add(
        self,
        column: str,
        message: str,
        mask: np.ndarray | pd.Series,
    ) -> None:
        """Flag rows of ``column``. Messages say what was expected and never quote the cell:
        any column may hold personal data (a shifted CSV field moves it anywhere)."""
        flags = np.asarray(mask, dtype=bool)
        if not flags.any():
            return
        new = flags & ~self.bad
        if new.any():
            self.skipped[f"{column}: {message}"] = int(new.sum())
        self.bad |= flags
        self.items.append((column, message, flags))

    def resolve(self, *, skip: bool) -> np.ndarray:
        """The rows to keep, or :class:`DataValidationError` when any is bad and not skipped."""
        if not self.items:
            return ~self.bad
        if skip and self.skippable:
            logger.warning("%s: skipped %d invalid row(s)", self.file, int(self.bad.sum()))
            return ~self.bad
        findings = self.findings()
        counts = "; ".join(f"{n:,} x {reason}" for reason, n in list(self.skipped.items())[:5])
        hint = (
            "fix the file, or pass --skip-invalid-rows to drop such rows (they are counted)"
            if self.skippable
            else "fix the file"
        )
        raise DataValidationError(
            findings,
            f"{self.file}: {int(self.bad.sum()):,} row(s) break the data contract ({counts}); "
            f"first: {findings[0].describe()}; {hint}",
        )

    def findings(self) -> list[Finding]:
        out: list[Finding] = []
        for column, message, flags in self.items:
            positions = np.flatnonzero(flags)
            for pos in positions[: self.cap]:
                out.append(Finding(self.file, int(pos) + 1, column, message))
            if positions.size > self.cap:
                more = f"{positions.size - self.cap:,} more rows: {message}"
                out.append(Finding(self.file, None, column, more))
        return out


# --- typing raw columns ---------------------------------------------------------------------

_MONEY = re.compile(
    r"^(?P<open>\()?\s*(?P<sign>[+-])?\s*(?:[A-Z]{0,3}[^\w\s.,()+-]?)\s*(?P<sign2>[+-])?\s*"
    r"(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
    r"\s*(?:[A-Z]{0,3}|[^\w\s.,()+-]|元)\s*(?P<close>\))?$"
)


def parse_money(text: str) -> float:
    """``¥1,234.50``, ``$12.00``, ``-€3``, ``(12.00)``, ``12.50 CNY`` -> float; NaN if not."""
    match = _MONEY.match(text)
    if match is None or bool(match["open"]) != bool(match["close"]):
        return float("nan")
    if match["sign"] and match["sign2"]:
        return float("nan")
    value = float(match["num"].replace(",", ""))
    negative = match["open"] or "-" in (match["sign"], match["sign2"])
    return -value if negative else value


def text_values(raw: pd.Series) -> pd.Series:
    """Stripped text, NaN for empty; whole-number columns exactly (see coerce_column)."""
    return coerce_column(raw, ColumnKind.TEXT).values


def number_values(raw: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values, missing, invalid) of amounts or counts; text is parsed once per distinct value."""
    if pd.api.types.is_numeric_dtype(raw.dtype) and not pd.api.types.is_bool_dtype(raw.dtype):
        values = raw.to_numpy(dtype="float64", na_value=np.nan)
        missing = np.isnan(values)
        return values, missing, ~missing & ~np.isfinite(values)
    codes, uniques = pd.factorize(text_values(raw))
    parsed = pd.to_numeric(pd.Series(uniques, dtype="str"), errors="coerce").to_numpy(
        "float64", copy=True
    )
    for i in np.flatnonzero(np.isnan(parsed)):
        parsed[i] = parse_money(str(uniques[int(i)]))
    values = np.full(len(codes), np.nan)
    present = codes >= 0
    values[present] = parsed[codes[present]]
    missing = codes < 0
    return values, missing, ~missing & ~np.isfinite(values)


# --- the transactions file ------------------------------------------------------------------


def parse_rows(
    raw: pd.DataFrame,
    mapping: ColumnMapping,
    *,
    file: str,
    date_format: str | None,
    limits: ValidationLimits,
    now: pd.Timestamp,
) -> tuple[pd.DataFrame, RowProblems, str | None, bool]:
    """Type every mapped column and flag every row problem, in a fixed order.

    Returns the typed rows (all of them, bad ones included), their problems, the date format
    used and whether it was detected.
    """
    n = len(raw)
    src = mapping.columns
    p = RowProblems(file, n, limits.max_reported_per_check, skippable=True)
    out: dict[str, Any] = {}

    out["customer_id"] = text_values(raw["customer_id"])
    p.add(src["customer_id"], "customer id is missing", out["customer_id"].isna())
    if "store" in raw:
        out["store"] = text_values(raw["store"])
        p.add(src["store"], "store is missing", out["store"].isna())

    parsed = parse_timestamp_column(
        raw["timestamp"], date_format=date_format, file=file, field=src["timestamp"]
    )
    ts = out["timestamp"] = parsed.values
    p.add(src["timestamp"], "timestamp is missing", parsed.missing)
    how = "the detected format" if parsed.detected else "the format"
    p.add(src["timestamp"], f"not a date in {how} {parsed.format!r}", parsed.invalid)

    if "quantity" in raw:
        quantity, q_missing, q_invalid = number_values(raw["quantity"])
        fractional = ~q_missing & ~q_invalid & (np.nan_to_num(quantity) % 1 != 0)
        p.add(src["quantity"], "quantity is missing", q_missing)
        p.add(src["quantity"], "not a whole number (e.g. 1 or 12)", q_invalid | fractional)
        quantity = np.where(q_invalid | fractional, np.nan, quantity)
    else:
        quantity = np.ones(n)
    price = "amount" if "amount" in raw else "unit_price"
    value, a_missing, a_invalid = number_values(raw[price])
    p.add(src[price], f"{price.replace('_', ' ')} is missing", a_missing)
    p.add(src[price], "not an amount (e.g. 12.50 or ¥1,234.50)", a_invalid)
    amount = value if price == "amount" else np.round(quantity * value, 6)

    q_field = src.get("quantity", src[price])
    p.add(q_field, "quantity below 1 (a return or cancellation?)", quantity < 1)
    p.add(src[price], f"negative {price.replace('_', ' ')} (a return or cancellation?)", amount < 0)
    too_many = quantity > limits.max_quantity
    p.add(q_field, f"implausible quantity (above {limits.max_quantity:,})", too_many)
    p.add(
        src[price],
        f"implausible amount (above {limits.max_line_amount:,.0f} for one line)",
        amount > limits.max_line_amount,
    )
    latest = now + pd.Timedelta(days=limits.clock_skew_days)
    oldest = pd.Timestamp(limits.earliest_timestamp)
    p.add(src["timestamp"], f"timestamp is in the future (after {latest:%Y-%m-%d})", ts > latest)
    p.add(src["timestamp"], f"implausibly old timestamp (before {oldest:%Y-%m-%d})", ts < oldest)

    if "transaction_id" in raw:
        tid = text_values(raw["transaction_id"])
        p.add(src["transaction_id"], "transaction id is missing", tid.isna())
        seen = tid.where(~p.bad)
        p.add(
            src["transaction_id"],
            "duplicate transaction id (an earlier row has the same one)",
            seen.notna() & seen.duplicated(keep="first"),
        )
    else:
        tid = pd.Series(np.arange(1, n + 1), dtype="int64").astype("str")
        tid = "row-" + tid
    out["transaction_id"] = tid
    out["amount"] = amount
    # Rows outside the int64 range are flagged above; zero them so the cast stays quiet.
    castable = np.isfinite(quantity) & (np.abs(quantity) < 2.0**63)
    out["quantity"] = np.where(castable, quantity, 0).astype("int64")
    for name in TX_TEXT + CUSTOMER_TEXT:
        if name in raw:
            out[name] = text_values(raw[name])
        elif name in TX_TEXT:
            out[name] = pd.Series(np.nan, index=range(n), dtype="str")
    if "channel" in raw:  # "Mini Program" -> "mini_program", like KNOWN_CHANNELS
        codes, uniques = pd.factorize(out["channel"])
        names = pd.Index(uniques, dtype="str").str.lower().str.replace(r"[\s-]+", "_", regex=True)
        out["channel"] = pd.Series(names.take(codes, allow_fill=True), dtype="str")
    return pd.DataFrame(out), p, parsed.format, parsed.detected


def customers_table(tx: pd.DataFrame, events: pd.DataFrame | None) -> pd.DataFrame:
    """One row per customer: joined_at is the first purchase (or an earlier consent event);
    age_band and region are the latest non-empty values."""
    aggs: dict[str, tuple[str, str]] = {"joined_at": ("timestamp", "min")}
    aggs.update({name: (name, "last") for name in CUSTOMER_TEXT if name in tx})
    ordered = tx.sort_values("timestamp", kind="stable")
    customers = ordered.groupby("customer_id", sort=True).agg(**aggs)
    if events is not None and not events.empty:
        first_event = events.groupby("customer_id", sort=True)["timestamp"].min()
        customers = customers.reindex(customers.index.union(first_event.index))
        both = pd.concat([customers["joined_at"], first_event.rename("event")], axis=1)
        customers["joined_at"] = both.min(axis=1).astype("datetime64[ns]")
    return customers.rename_axis("customer_id").reset_index()
