"""Top-k rankings of categories and ranking metrics against multi-label truth, in numpy only.

Index space: the columns of :attr:`CategoryVocabulary.tokens`; column 0 is the unknown bucket
(pruned or never-seen categories). It is never a valid recommendation and never a valid
truth: :func:`top_k` and the baselines never rank it, the metrics drop it from the truth and
refuse rankings that contain it.

Metrics (binary relevance), for a customer with true set ``S`` and ranking ``r_1..r_k``:

- ``recall@k = |S ∩ r| / |S|``;
- ``precision@k = |S ∩ r| / k``;
- ``ndcg@k = Σ_j [r_j ∈ S] / log2(j + 1)`` divided by the ideal DCG, the same sum over the
  first ``min(|S|, k)`` positions.

Each metric is the mean over customers with at least one true category (column 0 aside);
customers without any are left out, and with none at all the metric is NaN. These values are
computed from a store's data without noise: they are for the store, not DP releases.
"""

from __future__ import annotations

import numpy as np

from fedcrm.models.vocabulary import SparseRows

__all__ = [
    "ndcg_at_k",
    "own_history_ranking",
    "popularity_ranking",
    "precision_at_k",
    "recall_at_k",
    "top_k",
]


def _check_k(k: int, n_cols: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be an integer >= 1 (got {k!r})")
    if k > n_cols - 1:
        raise ValueError(f"k={k} exceeds the {n_cols - 1} rankable categories (column 0 aside)")
    return int(k)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` best columns of each row of ``scores`` (n, V), best first, never column 0.

    Ties go to the lower column index, so the result is deterministic. Returns int64 (n, k).
    """
    s = np.asarray(scores)
    if not np.issubdtype(s.dtype, np.floating):
        s = s.astype(np.float64)
    if s.ndim != 2:
        raise ValueError(f"scores must be a 2-D array (got shape {s.shape})")
    k = _check_k(k, s.shape[1])
    s = s[:, 1:]
    if np.isnan(s).any():
        raise ValueError("scores hold NaN values")
    n = len(s)
    # the k-th largest value per row; everything above it is in, ties at it fill by index
    kth = -np.partition(-s, k - 1, axis=1)[:, k - 1 : k]
    above = s > kth
    at = s == kth
    need = k - above.sum(axis=1, keepdims=True)
    chosen = above | (at & (np.cumsum(at, axis=1) <= need))
    cols = np.nonzero(chosen)[1].reshape(n, k)  # ascending column per row
    order = np.argsort(-np.take_along_axis(s, cols, axis=1), axis=1, kind="stable")
    out: np.ndarray = np.take_along_axis(cols, order, axis=1).astype(np.int64) + 1
    return out


def _popularity_order(popularity: np.ndarray) -> np.ndarray:
    """Columns 1..V-1 by popularity, most popular first, ties by index."""
    pop = np.asarray(popularity, dtype=np.float64)
    if pop.ndim != 1 or len(pop) < 2:
        raise ValueError(f"popularity must be a 1-D array of >= 2 columns (got {pop.shape})")
    if not np.isfinite(pop).all():
        raise ValueError("popularity holds NaN or infinite values")
    cols = np.arange(1, len(pop))
    return cols[np.argsort(-pop[1:], kind="stable")]


def popularity_ranking(popularity: np.ndarray, n: int, k: int) -> np.ndarray:
    """The same top-``k`` of ``popularity`` (one value per column) for ``n`` customers."""
    order = _popularity_order(popularity)
    k = _check_k(k, len(order) + 1)
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"n must be an integer >= 0 (got {n!r})")
    return np.tile(order[:k], (int(n), 1))


def own_history_ranking(history: SparseRows, popularity: np.ndarray, k: int) -> np.ndarray:
    """ "Buy again": each customer's own categories, then popular ones, ``k`` per row.

    ``history`` holds pre-cutoff counts per column (:func:`~fedcrm.models.preference.
    category_history`). A customer's categories come first, by count (descending), ties by
    ``popularity`` (descending) then index; the rest of the row is the most popular
    categories not already listed. Column 0 never appears. Returns int64 (n, k).
    """
    order = _popularity_order(popularity)
    n_cols = len(order) + 1
    if history.n_cols != n_cols:
        raise ValueError(f"history has {history.n_cols} columns, popularity {n_cols}")
    k = _check_k(k, n_cols)
    n = history.shape[0]
    rank = np.empty(n_cols, dtype=np.int64)
    rank[order] = np.arange(len(order))
    rows = np.repeat(np.arange(n), np.diff(history.indptr))
    cols = np.asarray(history.indices, dtype=np.int64)
    counts = np.asarray(history.data, dtype=np.float64)
    keep = (cols != 0) & (counts > 0)
    rows, cols, counts = rows[keep], cols[keep], counts[keep]
    sort = np.lexsort((rank[cols], -counts, rows))
    rows, cols = rows[sort], cols[sort]
    starts = np.searchsorted(rows, np.arange(n))
    pos = np.arange(len(rows)) - starts[rows]
    first = pos < k
    out = np.full((n, k), -1, dtype=np.int64)
    out[rows[first], pos[first]] = cols[first]
    listed = np.bincount(rows[first], minlength=n)
    # fill: the top-k popular list always holds enough unlisted columns
    popular = order[:k]
    avail = ~_contains(out, np.broadcast_to(popular, (n, k)), n_cols)
    slot = listed[:, None] + np.cumsum(avail, axis=1) - 1
    put = avail & (slot < k)
    r = np.broadcast_to(np.arange(n)[:, None], (n, k))
    out[r[put], slot[put]] = np.broadcast_to(popular, (n, k))[put]
    return out


def _contains(sets: np.ndarray, queries: np.ndarray, n_cols: int) -> np.ndarray:
    """``queries[i, j] in sets[i]`` for int arrays whose rows are column sets (-1 = none)."""
    n = len(sets)
    row = np.arange(n, dtype=np.int64)[:, None]
    keys = np.sort((row * n_cols + sets)[sets >= 0])
    return _lookup(keys, row * n_cols + queries)


def _lookup(sorted_keys: np.ndarray, queries: np.ndarray) -> np.ndarray:
    if len(sorted_keys) == 0:
        return np.zeros(queries.shape, dtype=bool)
    at = np.minimum(np.searchsorted(sorted_keys, queries), len(sorted_keys) - 1)
    found: np.ndarray = sorted_keys[at] == queries
    return found


def _hits(truth: SparseRows, ranked: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(hits (n, k) bool, true-set sizes (n,)), column 0 dropped from the truth."""
    n, n_cols = truth.shape
    k = _check_k(k, n_cols)
    r = np.asarray(ranked)
    if r.ndim != 2 or r.shape[0] != n or r.shape[1] < k:
        raise ValueError(f"ranked must have shape ({n}, >= {k}) (got {r.shape})")
    if not np.issubdtype(r.dtype, np.integer):
        raise ValueError(f"ranked must hold integer column indices (got {r.dtype})")
    r = r[:, :k].astype(np.int64)
    if (r < 1).any() or (r >= n_cols).any():
        raise ValueError(f"ranked must hold columns in [1, {n_cols}): column 0 is never ranked")
    ordered = np.sort(r, axis=1)
    if (ordered[:, 1:] == ordered[:, :-1]).any():
        raise ValueError("ranked lists a column twice for some customer")
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(truth.indptr))
    cols = np.asarray(truth.indices, dtype=np.int64)
    keep = (cols != 0) & (np.asarray(truth.data) != 0)
    keys = np.unique(rows[keep] * n_cols + cols[keep])
    sizes = np.bincount(keys // n_cols, minlength=n)
    hits = _lookup(keys, np.arange(n, dtype=np.int64)[:, None] * n_cols + r)
    return hits, sizes


def _mean_over_truth(values: np.ndarray, sizes: np.ndarray) -> float:
    has = sizes > 0
    return float(values[has].mean()) if has.any() else float("nan")


def recall_at_k(truth: SparseRows, ranked: np.ndarray, k: int = 10) -> float:
    """Mean share of each customer's true categories found in their top ``k``."""
    hits, sizes = _hits(truth, ranked, k)
    return _mean_over_truth(hits.sum(axis=1) / np.maximum(sizes, 1), sizes)


def precision_at_k(truth: SparseRows, ranked: np.ndarray, k: int = 10) -> float:
    """Mean share of each customer's top ``k`` that are true categories."""
    hits, sizes = _hits(truth, ranked, k)
    return _mean_over_truth(hits.sum(axis=1) / k, sizes)


def ndcg_at_k(truth: SparseRows, ranked: np.ndarray, k: int = 10) -> float:
    """Mean normalised DCG at ``k`` (binary relevance, ``1 / log2(position + 1)`` discount)."""
    hits, sizes = _hits(truth, ranked, k)
    discount = 1.0 / np.log2(np.arange(2, hits.shape[1] + 2))
    # ideal[m] = DCG of m hits on top; ideal[0] is a placeholder (those rows are left out)
    ideal = np.concatenate(([1.0], np.cumsum(discount)))[np.minimum(sizes, hits.shape[1])]
    return _mean_over_truth((hits @ discount) / ideal, sizes)
