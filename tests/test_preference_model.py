"""Category preference model: history before the cutoff, inputs, loss, DP-SGD training."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from fedcrm.errors import ConfigError, DataError
from fedcrm.models.preference import (
    BuyAgain,
    MultiLabelLoss,
    PreferenceModel,
    build_preference_model,
    category_history,
    predict_scores,
    preference_inputs,
)
from fedcrm.models.ranking import popularity_ranking, recall_at_k, top_k
from fedcrm.models.vocabulary import CategoryVocabulary, SparseRows
from fedcrm.privacy.dp_sgd import DpSgdConfig, train_dp

pytestmark = [
    pytest.mark.filterwarnings("ignore::fedcrm.errors.PrivacyWarning"),
    pytest.mark.filterwarnings("ignore:Secure RNG turned off"),
    pytest.mark.filterwarnings("ignore:Full backward hook is firing"),
]

CUTOFF = pd.Timestamp("2024-03-01")
VOCAB = CategoryVocabulary.from_categories(["baby/formula", "dairy/milk", "snacks/chips"])
# tokens: 0 UNKNOWN, 1 baby/formula, 2 dairy/milk, 3 snacks/chips


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def transactions() -> pd.DataFrame:
    rows = [
        ("a", "2024-01-05", "Dairy / Milk"),
        ("a", "2024-02-10", "dairy/milk"),
        ("a", "2024-02-11", "baby/formula"),
        ("a", "2024-02-12", "garden/tools"),  # unknown → column 0
        ("a", "2024-02-13", None),  # null category: skipped
        ("b", "2024-02-29 23:59:59", "snacks/chips"),
        ("b", "2024-03-01", "baby/formula"),  # exactly at the cutoff: never counted
        ("b", "2024-04-01", "dairy/milk"),  # after the cutoff
        ("c", "2024-03-02", "snacks/chips"),  # only after the cutoff
        ("z", "2024-01-01", "snacks/chips"),  # not in the population
    ]
    frame = pd.DataFrame(rows, columns=["customer_id", "timestamp", "category"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], format="ISO8601")
    frame["amount"] = 1.0
    return frame


def test_history_counts_lines_strictly_before_the_cutoff() -> None:
    ids = pd.Index(["a", "b", "c"], name="customer_id")
    history = category_history(ids, transactions(), CUTOFF, VOCAB)
    assert history.shape == (3, 4)
    np.testing.assert_array_equal(
        history.to_dense(),
        [
            [1, 1, 2, 0],  # a: unknown 1, formula 1, milk 2 (null skipped)
            [0, 0, 0, 1],  # b: the chips one second before T; nothing at or after T
            [0, 0, 0, 0],  # c: bought only after T
        ],
    )
    # moving every row at/after the cutoff (or dropping them) changes nothing
    tx = transactions()
    late = tx["timestamp"] >= CUTOFF
    moved = tx.assign(category=tx["category"].where(~late, "dairy/milk"))
    for frame in (moved, tx.loc[~late]):
        again = category_history(ids, frame, CUTOFF, VOCAB)
        np.testing.assert_array_equal(again.to_dense(), history.to_dense())


def test_inputs_are_features_then_history_shares() -> None:
    ids = pd.Index(["a", "b", "c"], name="customer_id")
    history = category_history(ids, transactions(), CUTOFF, VOCAB)
    features = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    inputs = preference_inputs(features, history)
    assert inputs.dtype == np.float32 and inputs.shape == (3, 2 + 4)
    np.testing.assert_allclose(
        inputs,
        [
            [1, 2, 0.25, 0.25, 0.5, 0],
            [3, 4, 0, 0, 0, 1],
            [5, 6, 0, 0, 0, 0],  # no history: zeros
        ],
    )
    # a fixed per-row transform: a row's inputs do not depend on the other rows
    np.testing.assert_array_equal(
        preference_inputs(features[:1], category_history(ids[:1], transactions(), CUTOFF, VOCAB)),
        inputs[:1],
    )
    with pytest.raises(ValueError, match="shape"):
        preference_inputs(features[:2], history)
    with pytest.raises(ValueError, match="NaN"):
        preference_inputs(np.full((3, 2), np.nan), history)


def test_model_shape_and_scores() -> None:
    torch.manual_seed(0)
    model = build_preference_model(5, 40, dim=8)
    assert isinstance(model, PreferenceModel)
    assert model.output.weight.shape == (40, 8)  # one embedding row per category
    # only modules Opacus can clip per customer (BuyAgain brings its own grad sampler)
    assert {type(m) for m in model.modules()} <= {
        PreferenceModel,
        nn.Linear,
        nn.LayerNorm,
        BuyAgain,
    }
    x = np.random.default_rng(0).normal(size=(10, 45)).astype(np.float32)
    model.train()
    scores = predict_scores(model, x, batch_size=3)
    assert scores.shape == (10, 40) and scores.dtype == np.float32
    assert model.training  # mode restored
    with torch.no_grad():
        np.testing.assert_allclose(scores, model(torch.from_numpy(x)).numpy(), rtol=1e-5)
    assert predict_scores(model, x[:0]).shape == (0, 40)
    with pytest.raises(ValueError, match="n_categories"):
        build_preference_model(5, 1)


@pytest.mark.parametrize("pos_weight", [None, 3.0])
def test_multi_label_loss_reductions_match_torch(pos_weight: float | None) -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 7, generator=gen)
    target = (torch.rand(6, 7, generator=gen) > 0.5).float()
    weight = None if pos_weight is None else torch.full((7,), pos_weight)
    reference = nn.BCEWithLogitsLoss(pos_weight=weight, reduction="none")(logits, target).sum(1)
    loss = MultiLabelLoss(pos_weight=pos_weight)
    assert loss.reduction == "mean"
    torch.testing.assert_close(loss(logits, target), reference.mean())
    loss.reduction = "none"  # what Opacus' ghost clipping does
    per_row = loss(logits, target)
    assert per_row.shape == (6,)
    torch.testing.assert_close(per_row, reference)
    torch.testing.assert_close(MultiLabelLoss("sum", pos_weight)(logits, target), reference.sum())
    with pytest.raises(ValueError, match="reduction"):
        MultiLabelLoss("batchmean")
    with pytest.raises(ValueError, match="pos_weight"):
        MultiLabelLoss(pos_weight=0.0)
    with pytest.raises(ValueError, match=r"\(B, V\)"):
        loss(logits, target[:, :3])


def planted(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """5 groups, each buying its own 3 categories with p 0.6; columns 16-20 popular (0.3)."""
    rng = np.random.default_rng(seed)
    group = rng.integers(0, 5, n)
    features = np.eye(5, dtype=np.float32)[group] + 0.3 * rng.normal(size=(n, 5))
    p = np.full((n, 21), 0.02)
    p[:, 0] = 0.1
    p[:, 16:] = 0.3
    for j in range(5):
        p[group == j, 1 + 3 * j : 4 + 3 * j] = 0.6
    y = (rng.random((n, 21)) < p).astype(np.float32)
    history = SparseRows.from_pairs(*np.nonzero(rng.random((n, 21)) < p / 2), n, 21, binary=False)
    return preference_inputs(features, history), y


def test_dp_sgd_learns_planted_preferences() -> None:
    x, y = planted(2_000, 0)
    x_test, y_test = planted(1_000, 1)
    truth = SparseRows.from_pairs(*np.nonzero(y_test), len(y_test), 21, binary=True)
    popular = recall_at_k(truth, popularity_ranking(y.sum(axis=0), len(y_test), 3), k=3)
    torch.manual_seed(0)
    model = build_preference_model(5, 21, dim=16)
    config = DpSgdConfig(
        noise_multiplier=1.0,
        expected_batch_size=64,
        epochs=2,
        learning_rate=0.02,
        optimizer="adam",
        seed=1,
    )
    result = train_dp(model, x, y, config)
    learned = recall_at_k(truth, top_k(predict_scores(model, x_test), 3), k=3)
    assert popular == pytest.approx(0.25, abs=0.05)
    assert learned > popular + 0.12
    assert result.steps == 2 * 32 and np.isfinite(result.mean_loss)
    assert set(result.state_dict) == set(model.state_dict())


def test_one_customers_gradient_is_clipped_across_all_categories() -> None:
    # one row, q = 1, no noise, plain SGD with lr 1: the update is the clipped gradient of
    # the row's whole loss (200 categories, all wrong), so its norm is exactly C.
    v, clip = 200, 0.5
    torch.manual_seed(0)
    model = build_preference_model(3, v, dim=8)
    start = torch.cat([p.detach().reshape(-1).clone() for p in model.parameters()])
    x = np.ones((1, 3 + v), dtype=np.float32)
    y = np.ones((1, v), dtype=np.float32)
    config = DpSgdConfig(noise_multiplier=0.0, max_grad_norm=clip, learning_rate=1.0)
    result = train_dp(model, x, y, config)
    assert result.steps == 1 and result.sample_rate == 1.0
    moved = torch.cat([p.detach().reshape(-1) for p in model.parameters()]) - start
    assert float(moved.norm()) == pytest.approx(clip, rel=1e-4)


def test_custom_criterion_and_validation() -> None:
    x, y = planted(200, 2)
    config = DpSgdConfig(noise_multiplier=1.0, expected_batch_size=16)
    model = build_preference_model(5, 21, dim=4)
    result = train_dp(model, x, y, config, criterion=MultiLabelLoss(pos_weight=2.0))
    assert result.steps == 20 and np.isfinite(result.mean_loss)
    train_dp(model, x, y, config, pos_weight=2.0)  # default multi-label loss, weighted
    with pytest.raises(ConfigError, match="pos_weight"):
        train_dp(model, x, y, config, criterion=MultiLabelLoss(), pos_weight=2.0)
    with pytest.raises(ConfigError, match="reduction"):
        train_dp(model, x, y, config, criterion=MultiLabelLoss("sum"))
    with pytest.raises(DataError, match="only 0 and 1"):
        train_dp(model, x, y * 2, config)
    with pytest.raises(DataError, match="shape"):
        train_dp(model, x, y[:10], config)
    with pytest.raises(DataError, match="shape"):
        train_dp(model, x, y[:, :, None], config)


def test_buy_again_per_sample_gradient_matches_autograd() -> None:
    torch.manual_seed(1)
    layer = BuyAgain()
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([0.7, -0.3]))
    share = torch.rand(4, 6) * (torch.rand(4, 6) > 0.5)
    backprops = torch.randn(4, 6)
    expected = []
    for i in range(4):  # autograd, one customer at a time
        layer.zero_grad()
        (layer(share[i : i + 1]) * backprops[i : i + 1]).sum().backward()
        expected.append(layer.weight.grad.clone())
    got = BuyAgain.grad_sample(layer, [share], backprops)[layer.weight]
    torch.testing.assert_close(got, torch.stack(expected))


def test_buy_again_scores_a_customers_own_categories_higher() -> None:
    model = build_preference_model(3, 5, dim=4)
    with torch.no_grad():
        model.again.weight.copy_(torch.tensor([2.0, 1.0]))
    share = torch.tensor([[0.0, 0.0, 0.75, 0.25, 0.0]])
    lift = model.again(share)[0]
    # w · (log share, bought): 2·log 0.75 + 1 for category 2, 2·log 0.25 + 1 for 3, nothing
    # for categories never bought
    expected = torch.tensor([0.0, 0.0, 2 * math.log(0.75) + 1, 2 * math.log(0.25) + 1, 0.0])
    torch.testing.assert_close(lift, expected)


def test_untrained_model_ranks_own_categories_by_frequency_first() -> None:
    # the public prior: before any training the ranking is the customer's own categories,
    # most frequent first (then the rest), whatever the features say
    model = build_preference_model(3, 8, dim=4)
    features = torch.randn(2, 3)
    share = torch.tensor(
        [
            [0.0, 0.0, 0.1, 0.0, 0.6, 0.0, 0.3, 0.0],
            [0.0, 0.5, 0.0, 0.0, 0.0, 0.004, 0.0, 0.496],
        ]
    )
    scores = predict_scores(model, torch.cat([features, share], dim=1).numpy())
    np.testing.assert_array_equal(top_k(scores, 3)[0], [4, 6, 2])
    np.testing.assert_array_equal(top_k(scores, 3)[1], [1, 7, 5])
