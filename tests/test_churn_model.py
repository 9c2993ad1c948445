"""Churn model registry, batched prediction and local Platt calibration."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from opacus.validators import ModuleValidator
from torch import nn

from fedcrm.models.churn import (
    CHURN_MODELS,
    PlattCalibrator,
    build_churn_model,
    predict_logits,
    predict_proba,
)
from fedcrm.models.metrics import log_loss


def test_registry_builds_each_model_with_one_logit_per_row() -> None:
    assert tuple(CHURN_MODELS) == ("logistic", "mlp")
    x = torch.randn(5, 84)
    for name in CHURN_MODELS:
        model = build_churn_model(name, 84)
        assert model(x).shape == (5, 1)
        assert ModuleValidator.validate(model, strict=False) == []  # Opacus-compatible
        assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    mlp = build_churn_model("mlp", 84, hidden=16)
    assert any(isinstance(m, nn.LayerNorm) for m in mlp.modules())
    assert sum(p.numel() for p in mlp.parameters()) == 84 * 16 + 16 + 2 * 16 + 16 + 1
    assert sum(p.numel() for p in build_churn_model("logistic", 84).parameters()) == 85


def test_unknown_model_or_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="valid: logistic, mlp"):
        build_churn_model("xgboost", 84)
    with pytest.raises(ValueError, match="n_features"):
        build_churn_model("logistic", 0)
    with pytest.raises(ValueError, match="hidden"):
        build_churn_model("mlp", 4, hidden=0)
    with pytest.raises(TypeError):
        build_churn_model("logistic", 4, hidden=8)


def test_predict_proba_is_the_sigmoid_batched_and_leaves_the_mode() -> None:
    torch.manual_seed(0)
    model = build_churn_model("mlp", 6)
    model.train()
    x = np.random.default_rng(0).normal(size=(23, 6)).astype(np.float32)
    with torch.no_grad():
        expected = torch.sigmoid(model(torch.from_numpy(x))).reshape(-1).numpy()
    got = predict_proba(model, x, batch_size=7)
    assert got.shape == (23,)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    np.testing.assert_allclose(predict_proba(model, x), got, rtol=1e-6)
    assert model.training  # restored
    np.testing.assert_allclose(1 / (1 + np.exp(-predict_logits(model, x))), got, rtol=1e-6)


def test_platt_recovers_a_known_calibration_map() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(scale=2.0, size=20_000)
    y = (rng.random(20_000) < 1 / (1 + np.exp(-(0.5 * logits - 1.0)))).astype(np.int8)
    calibrator = PlattCalibrator().fit(logits, y)
    assert calibrator.fitted
    assert calibrator.a == pytest.approx(0.5, abs=0.05)
    assert calibrator.b == pytest.approx(-1.0, abs=0.05)
    raw = 1 / (1 + np.exp(-logits))
    assert log_loss(y, calibrator.apply(logits)) < log_loss(y, raw) - 0.05


def test_platt_stays_finite_on_separable_data_and_starts_as_identity() -> None:
    identity = PlattCalibrator()
    np.testing.assert_allclose(identity.apply(np.array([0.0, 2.0])), [0.5, 1 / (1 + np.exp(-2))])
    logits = np.array([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0])
    y = np.array([0, 0, 0, 1, 1, 1])
    calibrator = PlattCalibrator().fit(logits, y)
    assert np.isfinite([calibrator.a, calibrator.b]).all() and calibrator.a > 0
    p = calibrator.apply(logits)
    assert (p[:3] < 0.5).all() and (p[3:] > 0.5).all()
    assert p.max() < 1.0  # Platt's smoothed targets: never certain on 6 rows
    with pytest.raises(ValueError, match="0 and 1"):
        PlattCalibrator().fit(logits, np.array([0, 0, 0, 1, 1, 2]))
