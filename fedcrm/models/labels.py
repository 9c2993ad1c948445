"""Churn and category-preference labels over the horizon window ``[T, T + H)``.

Labels read only transactions with ``T <= timestamp < T + H``: :func:`_window` slices once,
at the top. A label window that runs past the end of the observed data would call customers
churned who simply were not observed yet, so :func:`check_label_window` refuses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from fedcrm.errors import ConfigError
from fedcrm.models.snapshot import as_cutoff, check_event_table
from fedcrm.models.vocabulary import CategoryVocabulary, SparseRows

__all__ = ["Labels", "build_labels", "check_label_window", "churn_labels", "preference_labels"]

Level = Literal["category", "parent"]


def check_label_window(
    transactions: pd.DataFrame, cutoff: Any, horizon_days: int, data_end: Any = None
) -> tuple[pd.Timestamp, pd.Timestamp]:
    """``(T, T + H)`` after checking that the data covers the whole label window.

    ``data_end`` is the (exclusive) end of the observed period, e.g. the export time; by
    default it is the last transaction timestamp, which is conservative. Raises
    :class:`~fedcrm.errors.ConfigError` if ``T + H > data_end``.
    """
    if isinstance(horizon_days, bool) or not isinstance(horizon_days, (int, np.integer)):
        raise ConfigError(f"horizon_days must be a whole number of days, got {horizon_days!r}")
    if horizon_days < 1:
        raise ConfigError(f"horizon_days must be >= 1, got {horizon_days}")
    start = as_cutoff(cutoff)
    end = start + pd.Timedelta(days=int(horizon_days))
    check_event_table(transactions, "transactions")
    if data_end is None:
        if transactions["timestamp"].isna().all():
            raise ConfigError("cannot build labels: transactions hold no timestamps")
        observed = transactions["timestamp"].max()
        source = "the last transaction timestamp"
    else:
        observed, source = as_cutoff(data_end), "data_end"
    if end > observed:
        raise ConfigError(
            f"label window [{start}, {end}) ends after the observed data ({source} = {observed});"
            f" churn labels would be wrong. Use a cutoff <= {observed - (end - start)}, a "
            f"horizon <= {max((observed - start).days, 0)} days, or pass data_end if the data "
            "is known to be complete up to a later time"
        )
    return start, end


def _window(transactions: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """THE label slice: rows with ``start <= timestamp < end``."""
    ts = transactions["timestamp"]
    return transactions.loc[(ts >= start) & (ts < end) & transactions["customer_id"].notna()]


def _rows(customer_ids: pd.Index, window: pd.DataFrame) -> tuple[pd.Index, np.ndarray]:
    ids = pd.Index(customer_ids, name="customer_id")
    if not ids.is_unique:
        raise ValueError("customer_ids must be unique")
    return ids, ids.get_indexer(window["customer_id"])


def churn_labels(
    customer_ids: pd.Index,
    transactions: pd.DataFrame,
    cutoff: Any,
    horizon_days: int,
    *,
    data_end: Any = None,
) -> np.ndarray:
    """1 for each customer with no purchase in ``[T, T + H)``, else 0 (int8, in id order)."""
    start, end = check_label_window(transactions, cutoff, horizon_days, data_end)
    ids, rows = _rows(customer_ids, _window(transactions, start, end))
    bought = np.bincount(rows[rows >= 0], minlength=len(ids)) > 0
    return (~bought).astype(np.int8)


def preference_labels(
    customer_ids: pd.Index,
    transactions: pd.DataFrame,
    cutoff: Any,
    horizon_days: int,
    vocabulary: CategoryVocabulary,
    *,
    level: Level = "category",
    data_end: Any = None,
) -> SparseRows:
    """Multi-hot of the categories each customer bought in ``[T, T + H)``.

    Columns are ``vocabulary.tokens`` (``level="category"``) or ``vocabulary.parent_tokens``
    (``level="parent"``); column 0 is the unknown bucket. Null categories are left out.
    """
    start, end = check_label_window(transactions, cutoff, horizon_days, data_end)
    window = _window(transactions, start, end)
    ids, rows = _rows(customer_ids, window)
    if level not in ("category", "parent"):
        raise ConfigError(f"level must be 'category' or 'parent', got {level!r}")
    n_cols = len(vocabulary) if level == "category" else len(vocabulary.parent_tokens)
    if "category" not in window:
        cols = np.full(len(window), -1, dtype=np.int64)
    elif level == "category":
        cols = vocabulary.encode(window["category"])
    else:
        cols = vocabulary.encode_parents(window["category"])
    ok = (rows >= 0) & (cols >= 0)
    return SparseRows.from_pairs(rows[ok], cols[ok], len(ids), n_cols, binary=True)


@dataclass(frozen=True)
class Labels:
    """Churn and (optionally) preference labels of one population at one cutoff."""

    customer_ids: pd.Index
    cutoff: pd.Timestamp
    horizon_days: int
    churn: np.ndarray
    preference: SparseRows | None = None
    vocabulary: CategoryVocabulary | None = None
    level: Level = "category"

    def __len__(self) -> int:
        return len(self.customer_ids)

    def __repr__(self) -> str:  # no rows: pseudonyms are personal data
        return (
            f"Labels(cutoff={self.cutoff}, horizon_days={self.horizon_days}, "
            f"customers={len(self)}, churn_rate={float(self.churn.mean()) if len(self) else 0:.3f})"
        )


def build_labels(
    customer_ids: pd.Index,
    transactions: pd.DataFrame,
    cutoff: Any,
    horizon_days: int,
    *,
    vocabulary: CategoryVocabulary | None = None,
    level: Level = "category",
    data_end: Any = None,
) -> Labels:
    """Churn labels, plus preference labels when a ``vocabulary`` is given.

    ``customer_ids`` is the feature population (``FeatureSnapshot.customer_ids``).
    """
    churn = churn_labels(customer_ids, transactions, cutoff, horizon_days, data_end=data_end)
    pref = None
    if vocabulary is not None:
        pref = preference_labels(
            customer_ids,
            transactions,
            cutoff,
            horizon_days,
            vocabulary,
            level=level,
            data_end=data_end,
        )
    return Labels(
        pd.Index(customer_ids, name="customer_id"),
        as_cutoff(cutoff),
        int(horizon_days),
        churn,
        pref,
        vocabulary,
        level,
    )
