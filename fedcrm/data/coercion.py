"""Typing raw columns as the contract says, vectorised, with a mask of the values that failed.

Each coercer takes the raw column (text from CSV, or native from Parquet) and returns the
typed column plus two boolean masks: ``missing`` (empty/null) and ``invalid`` (present but not
of the kind). Callers decide what a missing value means (nullable or not).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedcrm.data.contract import ColumnKind

__all__ = ["TIMESTAMP_FORMAT_HELP", "Coerced", "coerce_column"]

TIMESTAMP_FORMAT_HELP = "ISO 8601, e.g. 2025-03-01 or 2025-03-01 14:05:00"

_OFFSET = r"(?:Z|[+-]\d{2}:?\d{2})$"
_TRUE = frozenset({"true", "t", "yes", "y", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "0"})


@dataclass(frozen=True)
class Coerced:
    values: pd.Series
    missing: np.ndarray
    invalid: np.ndarray
    expected: str  # what a valid value looks like, for messages


def _text(raw: pd.Series) -> tuple[pd.Series, np.ndarray]:
    if pd.api.types.is_integer_dtype(raw.dtype):
        # Exact: a float detour would corrupt ids above 2**53 (18-digit member ids).
        s = raw.astype("Int64").astype("str").mask(raw.isna())
    elif pd.api.types.is_float_dtype(raw.dtype):
        # Parquet with numeric ids: render without a trailing ".0".
        as_text = raw.map(
            lambda v: None if pd.isna(v) else (f"{v:.0f}" if float(v).is_integer() else str(v))
        )
        s = as_text.astype("str")
    else:
        s = raw.astype("str")
    s = s.str.strip()
    missing = (s.isna() | (s == "")).to_numpy()
    s = s.mask(missing)
    return s, missing


def _coerce_text(raw: pd.Series) -> Coerced:
    s, missing = _text(raw)
    return Coerced(s, missing, np.zeros(len(s), dtype=bool), "text")


def _coerce_timestamp(raw: pd.Series) -> Coerced:
    if pd.api.types.is_datetime64_any_dtype(raw.dtype):
        s = raw
        if getattr(s.dt, "tz", None) is not None:
            s = s.dt.tz_localize(None)  # keep the store's wall-clock time, drop the zone
        s = s.astype("datetime64[ns]")
        missing = s.isna().to_numpy()
        return Coerced(s, missing, np.zeros(len(s), dtype=bool), TIMESTAMP_FORMAT_HELP)
    text, missing = _text(raw)
    # Store-local wall-clock time: a UTC offset is dropped, never applied, so a purchase stays
    # on the day and side of the cutoff the store recorded it.
    wall_clock = text.str.replace(_OFFSET, "", regex=True)
    parsed = pd.to_datetime(wall_clock, errors="coerce", format="ISO8601").astype("datetime64[ns]")
    invalid = parsed.isna().to_numpy() & ~missing
    return Coerced(parsed, missing, invalid, TIMESTAMP_FORMAT_HELP)


def _coerce_date(raw: pd.Series) -> Coerced:
    c = _coerce_timestamp(raw)
    return Coerced(c.values.dt.normalize(), c.missing, c.invalid, "a date, e.g. 1990-05-17")


def _numeric(raw: pd.Series) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    if pd.api.types.is_numeric_dtype(raw.dtype) and not pd.api.types.is_bool_dtype(raw.dtype):
        s = raw.astype("float64")
        missing = s.isna().to_numpy()
        invalid = ~np.isfinite(s.to_numpy()) & ~missing
        return s, missing, invalid
    text, missing = _text(raw)
    s = pd.to_numeric(text, errors="coerce").astype("float64")
    invalid = (s.isna().to_numpy() & ~missing) | (~np.isfinite(s.fillna(0).to_numpy()))
    return s, missing, invalid


def _coerce_float(raw: pd.Series) -> Coerced:
    s, missing, invalid = _numeric(raw)
    return Coerced(s.mask(invalid), missing, invalid, "a number")


def _coerce_int(raw: pd.Series) -> Coerced:
    s, missing, invalid = _numeric(raw)
    values = s.to_numpy()
    fractional = ~missing & ~invalid & (np.floor(np.nan_to_num(values)) != np.nan_to_num(values))
    invalid = invalid | fractional
    # Stays float (NaN where missing or invalid) so rule checks skip bad cells; the
    # validator casts to int64 once the whole table is clean.
    return Coerced(s.mask(invalid | missing), missing, invalid, "a whole number")


def _coerce_bool(raw: pd.Series) -> Coerced:
    if pd.api.types.is_bool_dtype(raw.dtype):
        missing = raw.isna().to_numpy()
        return Coerced(
            raw.fillna(False).astype("bool"), missing, np.zeros(len(raw), dtype=bool), "true/false"
        )
    text, missing = _text(raw)
    lowered = text.str.lower()
    is_true = lowered.isin(_TRUE).to_numpy()
    is_false = lowered.isin(_FALSE).to_numpy()
    invalid = ~missing & ~is_true & ~is_false
    return Coerced(
        pd.Series(is_true, index=raw.index, dtype="bool"), missing, invalid, "true/false"
    )


_COERCERS: dict[ColumnKind, Callable[[pd.Series], Coerced]] = {
    ColumnKind.ID: _coerce_text,
    ColumnKind.TEXT: _coerce_text,
    ColumnKind.TIMESTAMP: _coerce_timestamp,
    ColumnKind.DATE: _coerce_date,
    ColumnKind.FLOAT: _coerce_float,
    ColumnKind.INT: _coerce_int,
    ColumnKind.BOOL: _coerce_bool,
}


def coerce_column(raw: pd.Series, kind: ColumnKind) -> Coerced:
    """Type ``raw`` as ``kind``; see the module docstring for the masks."""
    return _COERCERS[kind](raw.reset_index(drop=True))
