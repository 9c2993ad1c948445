"""The noise of an analytics answer: the discrete Gaussian, from OpenDP.

A store answers a query with an integer vector (counts) in which one customer changes at most
``l2_sensitivity`` in L2 norm. It adds independent discrete Gaussian noise of scale σ to every
cell (OpenDP's ``make_gaussian`` over integers: exact sampling from a cryptographically secure
generator, no floating-point leaks), so the answer stays an integer vector that secure
aggregation can sum exactly.

Calibration: σ = ``z · l2_sensitivity`` where ``z`` is the noise multiplier for which one
Gaussian release (q = 1, one step) costs ``epsilon`` at ``delta`` under the PRV accountant
(:func:`~fedcrm.privacy.accounting.plan_noise_multiplier`) — the same accountant and ledger
entry as a DP-SGD round, so analytics and training compose in one lifetime budget.

Guarantee and its limits: the discrete Gaussian with scale σ satisfies the same ρ-zCDP as the
continuous one, ρ = Δ²/(2σ²) (Canonne, Kamath & Steinke 2020, Thm 4 and 14 — the vector case
adds a term below 1e-12 for σ ≥ 1); the ledger accounts it as the continuous Gaussian with that
σ, whose (ε, δ) curve the discrete one matches to within that term. :func:`zcdp_rho` reports ρ
for the audit trail. The guarantee is per store and per customer of that store: each store's
own noise protects its customers even if every other store and the coordinator collude; the
chain-wide total carries the noise of all stores (std √(Σσ²)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from fedcrm.errors import ConfigError

__all__ = ["NoisePlan", "discrete_gaussian", "plan_noise", "zcdp_rho"]

#: Largest |count| a cell may hold (OpenDP samples over 32-bit integers).
MAX_ABS_COUNT = 2**30


@dataclass(frozen=True)
class NoisePlan:
    """One release's noise: multiplier ``z`` (σ / Δ), scale σ and what it costs."""

    epsilon: float
    delta: float
    l2_sensitivity: float
    noise_multiplier: float

    @property
    def scale(self) -> float:
        """σ of the discrete Gaussian added to every cell."""
        return self.noise_multiplier * self.l2_sensitivity


def plan_noise(epsilon: float, delta: float, l2_sensitivity: float) -> NoisePlan:
    """The noise for one release of ``epsilon`` at ``delta`` (PRV accountant, q = 1, 1 step)."""
    if not (math.isfinite(l2_sensitivity) and l2_sensitivity > 0):
        raise ConfigError(f"l2_sensitivity must be a finite number > 0 (got {l2_sensitivity!r})")
    z = _multiplier(float(epsilon), float(delta))
    return NoisePlan(float(epsilon), float(delta), float(l2_sensitivity), z)


@lru_cache(maxsize=256)
def _multiplier(epsilon: float, delta: float) -> float:
    from fedcrm.privacy.accounting import plan_noise_multiplier

    return float(plan_noise_multiplier(epsilon, delta, 1.0, 1))


def zcdp_rho(plan: NoisePlan) -> float:
    """ρ of the release in zero-concentrated DP: Δ² / (2σ²) = 1 / (2 z²)."""
    return 1.0 / (2.0 * plan.noise_multiplier**2)


@lru_cache(maxsize=64)
def _measurement(scale: float) -> Any:
    import opendp.prelude as dp

    dp.enable_features("contrib")
    space = dp.vector_domain(dp.atom_domain(T=int)), dp.l2_distance(T=int)
    return space >> dp.m.then_gaussian(scale=scale)


def discrete_gaussian(counts: np.ndarray, scale: float) -> np.ndarray:
    """``counts`` plus independent discrete Gaussian noise of scale σ per cell (int64).

    ``counts`` must be integers with |value| ≤ :data:`MAX_ABS_COUNT`.
    """
    values = np.asarray(counts)
    if values.ndim != 1 or not np.issubdtype(values.dtype, np.integer):
        raise ConfigError(f"counts must be a 1-D integer array (got {values.dtype}{values.shape})")
    if len(values) and int(np.abs(values).max()) > MAX_ABS_COUNT:
        raise ConfigError(f"a count exceeds {MAX_ABS_COUNT}: too large to noise exactly")
    if not (math.isfinite(scale) and scale > 0):
        raise ConfigError(f"scale must be a finite number > 0 (got {scale!r})")
    if len(values) == 0:
        return values.astype(np.int64)
    noisy = _measurement(float(scale))([int(v) for v in values])
    return np.asarray(noisy, dtype=np.int64)
