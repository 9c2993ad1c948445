"""Local DP-SGD: learns without noise, is noise-dominated with huge noise, noise is calibrated."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from opacus import PrivacyEngine
from torch import nn

from fedcrm.errors import ConfigError, DataError, PrivacyWarning
from fedcrm.models.churn import build_churn_model, predict_proba
from fedcrm.models.metrics import log_loss, roc_auc
from fedcrm.privacy import dp_sgd
from fedcrm.privacy.dp_sgd import (
    DpSgdConfig,
    effective_batch_size,
    sample_rate_for,
    steps_per_epoch,
    train_dp,
)
from fedcrm.privacy.ledger import LedgerEntry

pytestmark = [
    pytest.mark.filterwarnings("ignore::fedcrm.errors.PrivacyWarning"),
    pytest.mark.filterwarnings("ignore:Secure RNG turned off"),
    pytest.mark.filterwarnings("ignore:Full backward hook is firing"),
]


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def separable(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    w = rng.normal(size=d)
    return x, (x @ w > 0).astype(np.int8)


def flat(state: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([v.reshape(-1) for v in state.values()])


def test_batch_is_capped_near_n_over_20_and_q_matches_opacus() -> None:
    assert effective_batch_size(1_500, 128) == 75
    assert steps_per_epoch(1_500, 128) == 20 and sample_rate_for(1_500, 128) == 0.05
    assert effective_batch_size(50_000, 256) == 256
    assert steps_per_epoch(50_000, 256) == 196
    assert effective_batch_size(5, 256) == 1 and sample_rate_for(5, 256) == 0.2
    with pytest.raises(ConfigError, match="n_records"):
        sample_rate_for(0, 128)


def test_without_noise_or_clipping_it_learns() -> None:
    x, y = separable(1_000, 10)
    torch.manual_seed(0)
    model = build_churn_model("logistic", 10)
    before = log_loss(y, predict_proba(model, x))
    config = DpSgdConfig(
        noise_multiplier=0.0,
        max_grad_norm=1e6,
        expected_batch_size=64,
        epochs=5,
        learning_rate=0.5,
        seed=1,
    )
    result = train_dp(model, x, y, config)
    after = log_loss(y, predict_proba(model, x))
    assert after < 0.5 * before
    assert roc_auc(y, predict_proba(model, x)) > 0.95
    assert result.steps == 5 * steps_per_epoch(1_000, 64)
    assert result.sample_rate == sample_rate_for(1_000, 64)
    assert result.records == 1_000 and np.isfinite(result.mean_loss)


def test_with_huge_noise_the_weights_are_noise() -> None:
    x, y = separable(1_000, 84)
    updates, aucs = [], []
    for seed in (1, 2):
        torch.manual_seed(0)  # same initial weights
        model = build_churn_model("logistic", 84)
        start = flat(model.state_dict())
        config = DpSgdConfig(noise_multiplier=1e4, expected_batch_size=64, seed=seed)
        updates.append(flat(train_dp(model, x, y, config).state_dict) - start)
        aucs.append(roc_auc(y, predict_proba(model, x)))
    cosine = torch.nn.functional.cosine_similarity(updates[0], updates[1], dim=0)
    assert abs(float(cosine)) < 0.3  # two runs share no direction: noise dominates
    assert all(abs(a - 0.5) < 0.15 for a in aucs)
    # without noise the two runs (different Poisson samples) move the same way
    same = []
    for seed in (1, 2):
        torch.manual_seed(0)
        model = build_churn_model("logistic", 84)
        start = flat(model.state_dict())
        config = DpSgdConfig(noise_multiplier=0.0, expected_batch_size=64, seed=seed)
        same.append(flat(train_dp(model, x, y, config).state_dict) - start)
    assert float(torch.nn.functional.cosine_similarity(same[0], same[1], dim=0)) > 0.7


def test_noise_has_the_calibrated_scale() -> None:
    # x = 0: weight gradients are exactly 0, so weight updates are noise only:
    # each step adds N(0, (σ C / B)²) per weight, times the learning rate.
    n, d, batch, sigma, clip, lr = 2_000, 400, 100, 2.0, 0.5, 1.0
    x = np.zeros((n, d), dtype=np.float32)
    y = np.zeros(n, dtype=np.int8)
    model = build_churn_model("logistic", d)
    start = model.linear.weight.detach().clone()
    config = DpSgdConfig(
        noise_multiplier=sigma,
        max_grad_norm=clip,
        expected_batch_size=batch,
        learning_rate=lr,
        seed=3,
    )
    result = train_dp(model, x, y, config)
    moved = (result.state_dict["linear.weight"] - start).reshape(-1)
    expected = lr * sigma * clip / batch * np.sqrt(result.steps)
    assert float(moved.std()) == pytest.approx(expected, rel=0.1)
    assert abs(float(moved.mean())) < 3 * expected / np.sqrt(d)


def test_state_dict_is_the_raw_modules_and_the_module_can_train_again() -> None:
    x, y = separable(300, 8)
    model = build_churn_model("mlp", 8, hidden=16)
    config = DpSgdConfig(noise_multiplier=1.0, expected_batch_size=32, optimizer="adam")
    result = train_dp(model, x, y, config)
    assert set(result.state_dict) == set(model.state_dict())
    assert not any(k.startswith("_module.") for k in result.state_dict)
    for key, value in model.state_dict().items():
        assert torch.equal(value, result.state_dict[key])
    again = train_dp(model, x, y, config)  # hooks were removed: no "add hooks twice"
    assert not torch.equal(flat(again.state_dict), flat(result.state_dict))
    # the returned tensors are copies, not views of the live parameters
    result.state_dict["layers.0.bias"].add_(1.0)
    assert not torch.equal(model.state_dict()["layers.0.bias"], result.state_dict["layers.0.bias"])


def test_an_opacus_wrapped_module_is_refused() -> None:
    x, y = separable(100, 4)
    model = build_churn_model("logistic", 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=10
    )
    wrapped, *_ = PrivacyEngine().make_private(
        module=model,
        optimizer=optimizer,
        data_loader=loader,
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        grad_sample_mode="ghost",
        criterion=nn.BCEWithLogitsLoss(),
    )
    with pytest.raises(ConfigError, match=r"plain nn\.Module"):
        train_dp(wrapped, x, y, DpSgdConfig(noise_multiplier=1.0))


def test_tiny_store_with_empty_batches_takes_noise_only_steps() -> None:
    x, y = separable(3, 4)
    model = build_churn_model("logistic", 4)
    start = flat(model.state_dict())
    result = train_dp(model, x, y, DpSgdConfig(noise_multiplier=1.0, epochs=20, seed=5))
    assert result.sample_rate == pytest.approx(1 / 3)
    assert result.steps == 60  # every Poisson draw counts, empty ones included
    assert np.isfinite(result.mean_loss)
    assert torch.isfinite(flat(result.state_dict)).all()
    assert not torch.equal(flat(result.state_dict), start)
    # one row: most draws are empty
    one = train_dp(
        build_churn_model("logistic", 4), x[:1], y[:1], DpSgdConfig(noise_multiplier=1.0)
    )
    assert one.steps == 1 and one.sample_rate == 1.0
    # the result is what the ledger records
    LedgerEntry("run", 1, "churn", 1.0, result.sample_rate, result.steps)


def test_pos_weight_raises_predicted_churn_on_imbalanced_data() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2_000, 6)).astype(np.float32)
    y = (x[:, 0] > 1.3).astype(np.int8)  # about 10 % positives
    means = []
    for weight in (None, 9.0):
        torch.manual_seed(0)
        model = build_churn_model("logistic", 6)
        config = DpSgdConfig(noise_multiplier=0.0, max_grad_norm=1e6, epochs=3, seed=1)
        train_dp(model, x, y, config, pos_weight=weight)
        means.append(float(predict_proba(model, x).mean()))
    assert means[1] > means[0] + 0.1


def test_warnings_for_weaker_guarantees(caplog: pytest.LogCaptureFixture, monkeypatch) -> None:
    monkeypatch.setattr(dp_sgd, "_warned_insecure_rng", False)
    x, y = separable(50, 3)
    with caplog.at_level(logging.WARNING, logger="fedcrm.privacy.dp_sgd"):
        train_dp(build_churn_model("logistic", 3), x, y, DpSgdConfig(noise_multiplier=1.0))
        train_dp(build_churn_model("logistic", 3), x, y, DpSgdConfig(noise_multiplier=1.0))
    assert sum("non-cryptographic" in r.message for r in caplog.records) == 1
    with pytest.warns(PrivacyWarning, match="NOT differentially private"):
        train_dp(build_churn_model("logistic", 3), x, y, DpSgdConfig(noise_multiplier=0.0))
    with pytest.warns(PrivacyWarning, match="seeded"):
        train_dp(build_churn_model("logistic", 3), x, y, DpSgdConfig(1.0, seed=7))


def test_config_and_data_are_validated() -> None:
    with pytest.raises(ConfigError, match="-1"):
        DpSgdConfig(noise_multiplier=-1)
    with pytest.raises(ConfigError, match="sgd, adam"):
        DpSgdConfig(noise_multiplier=1.0, optimizer="lbfgs")
    with pytest.raises(ConfigError, match="expected_batch_size"):
        DpSgdConfig(noise_multiplier=1.0, expected_batch_size=0)
    with pytest.raises(ConfigError, match="max_grad_norm"):
        DpSgdConfig(noise_multiplier=1.0, max_grad_norm=float("nan"))
    model = build_churn_model("logistic", 2)
    config = DpSgdConfig(noise_multiplier=1.0)
    x = np.zeros((4, 2), dtype=np.float32)
    with pytest.raises(DataError, match="only 0 and 1"):
        train_dp(model, x, np.array([0, 1, 2, 0]), config)
    with pytest.raises(DataError, match="shape"):
        train_dp(model, x, np.array([0, 1]), config)
    with pytest.raises(DataError, match="NaN"):
        train_dp(model, np.full((4, 2), np.nan, dtype=np.float32), np.zeros(4), config)
    with pytest.raises(ConfigError, match="pos_weight"):
        train_dp(model, x, np.zeros(4), config, pos_weight=0.0)
