"""PRV accounting: planning σ, composing heterogeneous histories, agreeing with Opacus."""

from __future__ import annotations

import math

import numpy as np
import pytest
from opacus.accountants import PRVAccountant, RDPAccountant

from fedcrm.errors import ConfigError
from fedcrm.privacy.accounting import (
    ACCOUNTANT,
    default_delta,
    epsilon_of,
    plan_noise_multiplier,
)

DELTA = 1e-5


def test_planned_sigma_spends_at_most_the_target_and_close_to_it() -> None:
    sigma = plan_noise_multiplier(3.0, DELTA, 0.05, 200)
    eps = epsilon_of([(sigma, 0.05, 200)], DELTA)
    assert eps <= 3.0
    assert eps >= 0.95 * 3.0
    # a little less noise would overspend: the plan is not needlessly noisy
    assert epsilon_of([(sigma * 0.97, 0.05, 200)], DELTA) > eps


def test_plan_with_prior_bounds_the_composition() -> None:
    prior = [(1.5, 0.05, 40)]
    spent = epsilon_of(prior, DELTA)
    sigma = plan_noise_multiplier(2.0, DELTA, 0.05, 100, prior=prior)
    total = epsilon_of([*prior, (sigma, 0.05, 100)], DELTA)
    assert spent < total <= 2.0
    assert total >= 0.95 * 2.0
    # without the prior, the same σ would leave budget unused
    assert epsilon_of([(sigma, 0.05, 100)], DELTA) < 2.0 - 0.1


def test_plan_refuses_when_prior_already_spent_the_target() -> None:
    with pytest.raises(ConfigError, match="already spent"):
        plan_noise_multiplier(0.5, DELTA, 0.05, 10, prior=[(1.0, 0.05, 100)])


def test_empty_history_costs_nothing() -> None:
    assert epsilon_of([], DELTA) == 0.0


def test_two_halves_compose_to_the_whole() -> None:
    whole = epsilon_of([(1.2, 0.05, 100)], DELTA)
    assert epsilon_of([(1.2, 0.05, 50), (1.2, 0.05, 50)], DELTA) == pytest.approx(whole, rel=1e-12)
    # Opacus composing the two halves as separate PRVs (no merging) agrees within 1 %
    accountant = PRVAccountant()
    accountant.history = [(1.2, 0.05, 50), (1.2, 0.05, 50)]
    assert accountant.get_epsilon(delta=DELTA) == pytest.approx(whole, rel=0.01)
    # and one half alone costs more than half of the whole (sub-linear composition)
    half = epsilon_of([(1.2, 0.05, 50)], DELTA)
    assert whole / 2 < half < whole


def test_matches_opacus_prv_accountant_driven_by_steps() -> None:
    accountant = PRVAccountant()
    for _ in range(30):
        accountant.step(noise_multiplier=1.2, sample_rate=0.04)
    for _ in range(15):
        accountant.step(noise_multiplier=2.0, sample_rate=0.1)
    assert accountant.history == [(1.2, 0.04, 30), (2.0, 0.1, 15)]
    expected = accountant.get_epsilon(delta=DELTA)
    assert epsilon_of([(2.0, 0.1, 15), (1.2, 0.04, 30)], DELTA) == pytest.approx(expected, rel=1e-9)
    # restoring the accountant from a JSON-shaped state dict gives the same ε
    restored = PRVAccountant()
    restored.load_state_dict({"history": [list(h) for h in accountant.history], "mechanism": "prv"})
    assert restored.get_epsilon(delta=DELTA) == pytest.approx(expected, rel=1e-9)


def test_heterogeneous_history_lies_between_its_homogeneous_bounds() -> None:
    low_noise = epsilon_of([(1.0, 0.05, 100)], DELTA)
    high_noise = epsilon_of([(2.0, 0.05, 100)], DELTA)
    mixed = epsilon_of([(1.0, 0.05, 50), (2.0, 0.05, 50)], DELTA)
    assert high_noise < mixed < low_noise


def test_prv_is_tighter_than_rdp() -> None:
    history = [(1.0, 0.05, 200)]
    rdp = RDPAccountant()
    rdp.history = list(history)
    prv = epsilon_of(history, DELTA)
    assert prv < rdp.get_epsilon(delta=DELTA)
    assert prv > 0.5 * rdp.get_epsilon(delta=DELTA)


def test_full_batch_gaussian_release_is_accounted() -> None:
    # one Gaussian release with sensitivity 1 and noise std 5 (analytics: q = 1, one step)
    eps = epsilon_of([(5.0, 1.0, 1)], DELTA)
    assert 0.5 < eps < 1.0
    assert math.isfinite(eps)


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"target_epsilon": 0.0}, "0.0"),
        ({"target_epsilon": float("nan")}, "nan"),
        ({"delta": 1.0}, "1.0"),
        ({"delta": 0}, "δ"),
        ({"sample_rate": 0.0}, "sample rate"),
        ({"sample_rate": 1.5}, "1.5"),
        ({"steps": 0}, "steps"),
        ({"steps": 2.5}, "2.5"),
    ],
)
def test_plan_validates_inputs_and_says_what_was_passed(
    kwargs: dict[str, float], text: str
) -> None:
    args = {"target_epsilon": 3.0, "delta": DELTA, "sample_rate": 0.05, "steps": 10}
    args.update(kwargs)
    with pytest.raises(ConfigError, match=text):
        plan_noise_multiplier(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "entry", [(0.0, 0.05, 10), (1.0, 0.0, 10), (1.0, 0.05, 0), (float("inf"), 0.1, 1), (1.0,)]
)
def test_epsilon_of_rejects_invalid_entries(entry: tuple[float, ...]) -> None:
    with pytest.raises(ConfigError):
        epsilon_of([entry], DELTA)  # type: ignore[list-item]


def test_accepts_numpy_numbers() -> None:
    eps = epsilon_of([(np.float32(1.5), np.float64(0.05), np.int64(20))], DELTA)
    assert eps == pytest.approx(epsilon_of([(1.5, 0.05, 20)], DELTA), rel=1e-6)


def test_default_delta() -> None:
    assert default_delta(1_000) == 1e-5
    assert default_delta(50_000) == pytest.approx(2e-6)
    with pytest.raises(ConfigError, match="0"):
        default_delta(0)
    assert ACCOUNTANT == "prv"
