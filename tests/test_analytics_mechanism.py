"""The discrete Gaussian of analytics answers: calibration, integers, statistical scale."""

from __future__ import annotations

import numpy as np
import pytest

from fedcrm.analytics.mechanism import discrete_gaussian, plan_noise, zcdp_rho
from fedcrm.errors import ConfigError
from fedcrm.privacy.accounting import epsilon_of


@pytest.mark.parametrize(("epsilon", "sensitivity"), [(1.0, 1.0), (0.5, 2.0**0.5), (2.0, 3.0)])
def test_planned_noise_spends_at_most_epsilon_and_not_much_less(
    epsilon: float, sensitivity: float
) -> None:
    delta = 1e-5
    plan = plan_noise(epsilon, delta, sensitivity)
    assert plan.scale == pytest.approx(plan.noise_multiplier * sensitivity)
    spent = epsilon_of([(plan.noise_multiplier, 1.0, 1)], delta)
    assert spent <= epsilon + 1e-9
    assert epsilon_of([(plan.noise_multiplier * 0.95, 1.0, 1)], delta) > spent  # tight-ish
    assert zcdp_rho(plan) == pytest.approx(sensitivity**2 / (2 * plan.scale**2))


def test_one_release_at_epsilon_one_has_the_textbook_scale() -> None:
    # the analytic Gaussian mechanism needs σ ≈ 3.73 for ε = 1, δ = 1e-5, Δ = 1
    assert 3.6 < plan_noise(1.0, 1e-5, 1.0).scale < 3.9


def test_noise_scale_matches_the_calibration_statistically() -> None:
    scale = plan_noise(1.0, 1e-5, 1.0).scale
    n = 40_000
    draws = discrete_gaussian(np.zeros(n, dtype=np.int64), scale)
    assert draws.dtype == np.int64 and np.all(draws == np.round(draws))
    # sample std of n draws has a standard error of ≈ σ/√(2n) (0.35% here): allow 2%
    assert np.std(draws) == pytest.approx(scale, rel=0.02)
    assert abs(np.mean(draws)) < 4 * scale / np.sqrt(n)  # unbiased
    # the shape of the discrete Gaussian: P(|X| ≤ σ) from its mass exp(-x²/2σ²) on integers
    support = np.arange(-60, 61)
    mass = np.exp(-(support**2) / (2 * scale**2))
    expected = mass[np.abs(support) <= scale].sum() / mass.sum()
    assert np.mean(np.abs(draws) <= scale) == pytest.approx(expected, abs=0.015)
    assert abs(np.mean(draws > 0) - np.mean(draws < 0)) < 0.02


def test_noise_is_added_per_cell_and_keeps_counts_integers() -> None:
    counts = np.array([1000, 0, 7, 123456], dtype=np.int64)
    noisy = discrete_gaussian(counts, 2.0)
    assert noisy.shape == counts.shape and noisy.dtype == np.int64
    assert np.all(np.abs(noisy - counts) < 2.0 * 10)  # 10σ
    repeats = np.stack([discrete_gaussian(counts, 2.0) for _ in range(5)])
    assert len({tuple(r) for r in repeats}) > 1  # fresh noise each time


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ConfigError, match="integer"):
        discrete_gaussian(np.array([1.5, 2.0]), 1.0)
    with pytest.raises(ConfigError, match="scale"):
        discrete_gaussian(np.array([1, 2]), 0.0)
    with pytest.raises(ConfigError, match="l2_sensitivity"):
        plan_noise(1.0, 1e-5, 0.0)
    with pytest.raises(ConfigError):
        plan_noise(0.0, 1e-5, 1.0)
