"""Binary classification metrics for churn scores, in numpy only.

- :func:`roc_auc` — rank-based (Mann-Whitney U), ties get their average rank, so a tie
  between a positive and a negative counts one half. With a single class the AUC is undefined
  and the function returns NaN rather than raising: a small store's evaluation split may hold
  no churner, and the caller decides (typically: leave that store out of the average, or
  weight it 0).
- :func:`brier_score` — mean squared error of the probabilities.
- :func:`log_loss` — mean negative log-likelihood, probabilities clipped to [1e-15, 1 - 1e-15].
- :func:`expected_calibration_error` — equal-width bins on [0, 1]; per bin, |mean label -
  mean probability| weighted by the bin's share of rows.

Labels must be 0/1 and probabilities in [0, 1]; anything else raises ValueError. These values
are computed from a store's data without noise: they are for the store, not DP releases.
"""

from __future__ import annotations

import numpy as np

__all__ = ["brier_score", "expected_calibration_error", "log_loss", "roc_auc"]

_CLIP = 1e-15


def _labels(y_true: np.ndarray) -> np.ndarray:
    y = np.asarray(y_true).reshape(-1)
    if len(y) == 0:
        raise ValueError("no rows")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    return y.astype(np.int8)


def _paired(y_true: np.ndarray, values: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    y = _labels(y_true)
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.shape != y.shape:
        raise ValueError(f"{name} has {len(v)} values for {len(y)} labels")
    if not np.isfinite(v).all():
        raise ValueError(f"{name} hold NaN or infinite values")
    return y, v


def _probabilities(y_true: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y, prob = _paired(y_true, p, "probabilities")
    if (prob < 0).any() or (prob > 1).any():
        raise ValueError("probabilities must lie in [0, 1]")
    return y, prob


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks; tied values share the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    # start index of each run of equal values
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    mean_rank = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """P(score of a random positive > score of a random negative), ties counting 1/2.

    NaN when ``y_true`` holds one class only (see the module docstring).
    """
    y, s = _paired(y_true, scores, "scores")
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(s)
    u = ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def brier_score(y_true: np.ndarray, p: np.ndarray) -> float:
    """Mean of ``(p - y)²``."""
    y, prob = _probabilities(y_true, p)
    return float(np.mean((prob - y) ** 2))


def log_loss(y_true: np.ndarray, p: np.ndarray) -> float:
    """Mean of ``-(y log p + (1 - y) log(1 - p))``, p clipped to [1e-15, 1 - 1e-15]."""
    y, prob = _probabilities(y_true, p)
    prob = np.clip(prob, _CLIP, 1 - _CLIP)
    return float(-np.mean(y * np.log(prob) + (1 - y) * np.log1p(-prob)))


def expected_calibration_error(y_true: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Σ_b (n_b / n) |mean(y_b) - mean(p_b)| over ``bins`` equal-width bins of [0, 1].

    Bin b holds ``b/bins <= p < (b+1)/bins``; ``p = 1`` falls in the last bin. Empty bins
    contribute nothing.
    """
    if not isinstance(bins, int) or isinstance(bins, bool) or bins < 1:
        raise ValueError(f"bins must be an integer >= 1 (got {bins!r})")
    y, prob = _probabilities(y_true, p)
    index = np.minimum((prob * bins).astype(np.int64), bins - 1)
    sum_y = np.bincount(index, weights=y.astype(np.float64), minlength=bins)
    sum_p = np.bincount(index, weights=prob, minlength=bins)
    return float(np.abs(sum_y - sum_p).sum() / len(y))
