"""Canary membership audit: the one-run bound by hand, and the audit of the product's DP-SGD.

The end-to-end tests are each one training of the logistic churn model on about 1,500 rows (fixed
seeds): the non-private control must show a large bound, DP-SGD at ε = 2 must stay below 2,
and DP-SGD with a tenth of the planned noise must be caught. (Subtler bugs are not: σ planned
for one epoch instead of 20, a true ε near 7 for a claim of 2, stays below 2 here; see
docs/privacy_audit.md.)
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import logit

from fedcrm.errors import ConfigError
from fedcrm.privacy import membership_audit
from fedcrm.privacy.accounting import plan_noise_multiplier
from fedcrm.privacy.dp_sgd import sample_rate_for, steps_per_epoch
from fedcrm.privacy.membership_audit import (
    AuditConfig,
    clopper_pearson_epsilon,
    epsilon_lower_bound,
    one_run_epsilon,
    one_run_p_value,
    run_audit,
)

pytestmark = [
    pytest.mark.filterwarnings("ignore::fedcrm.errors.PrivacyWarning"),
    pytest.mark.filterwarnings("ignore:Secure RNG turned off"),
    pytest.mark.filterwarnings("ignore:Full backward hook is firing"),
]


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def store_rows(n: int = 1_000, d: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x, (x[:, 0] + rng.normal(size=n) > 0).astype(np.int8)


# -- the bound, by hand ----------------------------------------------------------------------
def test_p_value_at_zero_epsilon_is_the_fair_coin_tail() -> None:
    assert one_run_p_value(10, 2, 2, 0.0, 0.0) == pytest.approx(0.25)
    assert one_run_p_value(100, 20, 15, 0.0, 0.0) == pytest.approx(stats.binom.sf(14, 20, 0.5))
    assert one_run_p_value(10, 4, 0, 3.0, 0.0) == 1.0


def test_all_guesses_right_gives_the_closed_form_bound() -> None:
    # δ = 0 and v = r: the p-value is q^r with q = e^ε/(1+e^ε), so ε = logit(0.05^(1/r)).
    assert one_run_epsilon(1_000, 100, 100, 0.0) == pytest.approx(logit(0.05 ** (1 / 100)), 1e-5)
    assert one_run_epsilon(1_000, 100, 100, 0.0) == pytest.approx(3.493, abs=1e-3)
    assert one_run_epsilon(1_000, 1_000, 1_000, 0.0) > 5.8  # more canaries, larger bound


def test_half_right_gives_zero_and_the_bound_grows_with_correct_guesses() -> None:
    assert one_run_epsilon(1_000, 200, 100, 1e-5) == 0.0
    assert one_run_epsilon(1_000, 200, 110, 1e-5) == 0.0  # within chance at 95%
    bounds = [one_run_epsilon(1_000, 200, v, 1e-5) for v in range(100, 201, 10)]
    assert all(a <= b for a, b in itertools.pairwise(bounds))
    assert bounds[-1] > bounds[-3] > bounds[4] > 0


def test_delta_and_confidence_weaken_the_bound() -> None:
    strict = one_run_epsilon(1_000, 200, 180, 0.0)
    assert one_run_epsilon(1_000, 200, 180, 1e-4) < strict
    assert one_run_epsilon(1_000, 200, 180, 0.0, confidence=0.99) < strict
    # at the bound itself the p-value is just below the level
    assert one_run_p_value(1_000, 200, 180, strict, 0.0) < 0.05
    assert one_run_p_value(1_000, 200, 180, strict + 1e-4, 0.0) >= 0.05


def test_clopper_pearson_by_hand() -> None:
    # 100 members all guessed in, 100 non-members all guessed out: TPR_low = 0.025^(1/100),
    # FPR_high = 1 - 0.025^(1/100).
    low = 0.025 ** (1 / 100)
    assert clopper_pearson_epsilon(100, 0, 0, 100, 0.0) == pytest.approx(math.log(low / (1 - low)))
    assert clopper_pearson_epsilon(50, 50, 50, 50, 1e-5) == 0.0
    with pytest.raises(ConfigError, match="member"):
        clopper_pearson_epsilon(0, 0, 5, 5, 1e-5)


def test_guess_rules_use_top_and_bottom_scores_with_bonferroni() -> None:
    membership = np.arange(400) % 2 == 0
    perfect, outcomes = epsilon_lower_bound(membership.astype(float), membership, 1e-5)
    assert [o.guesses for o in outcomes] == [40, 80, 200, 400]
    assert all(o.correct == o.guesses for o in outcomes)
    corrected = 1 - 0.05 / 4
    assert perfect == pytest.approx(one_run_epsilon(400, 400, 400, 1e-5, corrected))
    assert perfect < one_run_epsilon(400, 400, 400, 1e-5)  # the correction costs a little
    backwards, _ = epsilon_lower_bound(-membership.astype(float), membership, 1e-5)
    assert backwards == 0.0
    with pytest.raises(ConfigError, match="fractions"):
        epsilon_lower_bound(membership.astype(float), membership, 1e-5, (0.6,))


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ConfigError, match="design"):
        AuditConfig(1.0, design="nope")
    with pytest.raises(ConfigError, match="epsilon"):
        AuditConfig(0.0)
    with pytest.raises(ConfigError, match="delta"):
        AuditConfig(1.0, delta=0.0)


# -- the audit of the product's training -----------------------------------------------------
def test_non_private_control_is_caught() -> None:
    x, y = store_rows()
    result = run_audit(x, y, AuditConfig(None, canaries=1_000, seed=1))
    assert result.noise_multiplier == 0.0 and result.claimed_epsilon is None
    assert result.auc > 0.99
    assert result.epsilon_lower > 3.0  # a clearly positive bound: the audit can fail


def test_dp_sgd_stays_below_its_claimed_epsilon() -> None:
    x, y = store_rows()
    result = run_audit(x, y, AuditConfig(2.0, canaries=1_000, seed=1))
    assert result.records == 1_000 + result.included
    # σ is planned for the whole run, at the q and steps DP-SGD actually used
    q, steps = sample_rate_for(result.records, 128), 20 * steps_per_epoch(result.records, 128)
    assert (result.sample_rate, result.steps) == (q, steps)
    assert result.noise_multiplier == plan_noise_multiplier(2.0, 1e-5, q, steps) > 1.0
    assert result.below_claim and result.epsilon_lower < 2.0


def test_noise_ten_times_too_small_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    def too_small(epsilon: float, delta: float, q: float, steps: int) -> float:
        return plan_noise_multiplier(epsilon, delta, q, steps) / 10  # the bug

    monkeypatch.setattr(membership_audit, "plan_noise_multiplier", too_small)
    x, y = store_rows()
    result = run_audit(x, y, AuditConfig(2.0, canaries=1_000, seed=1))
    assert not result.below_claim and result.epsilon_lower > 2.0
