"""AUC, Brier, log loss and ECE against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedcrm.models.metrics import brier_score, expected_calibration_error, log_loss, roc_auc


def pairwise_auc(y: np.ndarray, s: np.ndarray) -> float:
    pos, neg = s[y == 1], s[y == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (len(pos) * len(neg)))


def test_auc_hand_examples() -> None:
    # pairs (pos, neg): (.35,.1) win, (.35,.4) loss, (.8,.1) win, (.8,.4) win -> 3/4
    assert roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == 0.75
    assert roc_auc(np.array([0, 1]), np.array([0.2, 0.9])) == 1.0
    assert roc_auc(np.array([1, 0]), np.array([0.2, 0.9])) == 0.0


def test_auc_counts_ties_as_one_half() -> None:
    assert roc_auc(np.array([0, 1]), np.array([0.5, 0.5])) == 0.5
    # (.5 vs .1) win, (.5 vs .5) tie, (.9 vs .1) win, (.9 vs .5) win -> 3.5/4
    assert roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.5, 0.5, 0.9])) == 0.875
    assert roc_auc(np.array([0, 1, 0, 1]), np.full(4, 0.3)) == 0.5


def test_auc_matches_pairwise_count_with_many_ties() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.random(500) + 0.3 * y, 1)  # heavy ties
    assert roc_auc(y, s) == pytest.approx(pairwise_auc(y, s), abs=1e-12)


def test_auc_is_nan_for_a_single_class() -> None:
    assert math.isnan(roc_auc(np.array([0, 0, 0]), np.array([0.1, 0.2, 0.3])))
    assert math.isnan(roc_auc(np.array([1]), np.array([0.7])))


def test_brier_and_log_loss_hand_examples() -> None:
    y = np.array([0, 1, 1])
    p = np.array([0.1, 0.8, 0.5])
    assert brier_score(y, p) == pytest.approx((0.01 + 0.04 + 0.25) / 3)
    assert log_loss(y, p) == pytest.approx(-(np.log(0.9) + np.log(0.8) + np.log(0.5)) / 3)
    assert log_loss(np.array([1]), np.array([0.0])) == pytest.approx(-np.log(1e-15))


def test_ece_hand_examples() -> None:
    y = np.array([0, 1, 1, 0])
    p = np.array([0.05, 0.15, 0.95, 1.0])
    # bin 0: |0 - .05| x 1, bin 1: |1 - .15| x 1, bin 9 (p = 1 included): |.5 - .975| x 2
    expected = (0.05 + 0.85 + 2 * 0.475) / 4
    assert expected_calibration_error(y, p, bins=10) == pytest.approx(expected)
    # perfectly calibrated within its bin
    assert expected_calibration_error(np.array([1, 0, 0, 0]), np.full(4, 0.25)) == pytest.approx(0)
    # one bin: |mean y - mean p|
    assert expected_calibration_error(y, p, bins=1) == pytest.approx(abs(0.5 - p.mean()))


def test_invalid_inputs_raise() -> None:
    with pytest.raises(ValueError, match="0 or 1"):
        roc_auc(np.array([0, 2]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="3 values for 2 labels"):
        brier_score(np.array([0, 1]), np.array([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        log_loss(np.array([0, 1]), np.array([0.1, 1.2]))
    with pytest.raises(ValueError, match="NaN"):
        roc_auc(np.array([0, 1]), np.array([np.nan, 0.2]))
    with pytest.raises(ValueError, match="no rows"):
        brier_score(np.array([]), np.array([]))
    with pytest.raises(ValueError, match="bins"):
        expected_calibration_error(np.array([0, 1]), np.array([0.1, 0.2]), bins=0)
