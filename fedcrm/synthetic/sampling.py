"""Vectorised sampling primitives: seeded streams, per-row categorical draws, top-k choice.

Every random draw of the generator comes from a :func:`stream`, a PCG64 generator keyed by
the chain seed and a fixed tuple (component, store index, ...). Keying by component keeps
parts independent: changing how interactions are drawn does not shift the transactions.
"""

from __future__ import annotations

import numpy as np

__all__ = ["RowSampler", "gumbel_top", "normalise_rows", "stream"]


def stream(seed: int, *key: int) -> np.random.Generator:
    """A PCG64 generator for ``seed`` and the component ``key`` (non-negative integers)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


def normalise_rows(weights: np.ndarray) -> np.ndarray:
    """Rows of non-negative ``weights`` scaled to sum to one.

    Raises ValueError when a row has no positive weight (it could never be drawn from).
    """
    weights = np.asarray(weights, dtype=np.float64)
    totals = weights.sum(axis=-1, keepdims=True)
    if np.any(weights < 0) or np.any(~(totals > 0)):
        raise ValueError("every row needs non-negative weights with a positive sum")
    return weights / totals


class RowSampler:
    """Draw one category per event, each event from its own row of probabilities.

    The rows are laid end to end as ``row + cumulative probability``, so one
    ``searchsorted`` serves a million events with different distributions.
    """

    def __init__(self, weights: np.ndarray) -> None:
        probs = normalise_rows(np.atleast_2d(weights))
        self.n_rows, self.n_cols = probs.shape
        cumulative = np.cumsum(probs, axis=1)
        cumulative[:, -1] = 1.0
        self._flat = (cumulative + np.arange(self.n_rows, dtype=np.float64)[:, None]).ravel()

    def sample(self, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The column drawn for each entry of ``rows`` (int64)."""
        rows = np.asarray(rows, dtype=np.int64)
        u = rng.random(rows.shape[0])
        found = np.searchsorted(self._flat, rows + u, side="right")
        return np.minimum(found - rows * self.n_cols, self.n_cols - 1)


def gumbel_top(log_weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Column order of each row, a weighted draw without replacement (Gumbel top-k).

    Taking the first ``k`` columns of row ``i`` samples ``k`` distinct columns with
    probabilities proportional to ``exp(log_weights[i])``; ``-inf`` columns come last.
    """
    noise = rng.gumbel(size=log_weights.shape)
    return np.argsort(-(log_weights + noise), axis=1, kind="stable")
