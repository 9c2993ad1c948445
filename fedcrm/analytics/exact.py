"""Simulation-only reference: a query's exact chain-wide answer, without noise or ledgers.

It reads every store's data directly (like the training baselines), so it exists only for
tests and benchmarks that measure how far the released, noisy answer is from the truth. It
spends no budget and is never part of a federated run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fedcrm.analytics.plan import QueryPlan

__all__ = ["exact_totals", "relative_errors"]

_REFERENCE_RUN = -1  # a run id no federated run uses: its preparations are cached apart


def exact_totals(plan: QueryPlan, store_dirs: Sequence[Path]) -> np.ndarray:
    """The sum over ``store_dirs`` of each store's exact counts for ``plan`` (int64)."""
    from fedcrm.clients.analytics_agent import store_counts
    from fedcrm.clients.store_agent import StoreSettings

    totals = None
    for store_dir in store_dirs:
        counts = store_counts(StoreSettings(store_dir=Path(store_dir)), plan, _REFERENCE_RUN)
        totals = counts if totals is None else totals + counts
    if totals is None:
        raise ValueError("no store directories given")
    return totals


def relative_errors(released: np.ndarray, exact: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """|released − exact| / exact for the cells in ``mask`` with exact > 0 (NaN elsewhere)."""
    out = np.full(len(exact), np.nan)
    ok = np.asarray(mask, bool) & (np.asarray(exact) > 0)
    out[ok] = np.abs(np.asarray(released, float)[ok] - exact[ok]) / exact[ok]
    return out
