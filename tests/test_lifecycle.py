"""Lifecycle stage and RFM rules on constructed customers."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from fedcrm.errors import ConfigError
from fedcrm.models import FeatureSpec, build_features
from fedcrm.models.lifecycle import (
    RFM_SEGMENTS,
    LifecycleConfig,
    RfmConfig,
    lifecycle_stage,
    quintile_scores,
    rfm_scores,
    rfm_segment,
    value_tier,
)

T = pd.Timestamp("2024-07-01")


def stage(recency: float, tenure: float, recent: int, earlier: int, **cfg: float) -> str:
    out = lifecycle_stage(
        np.array([recency]),
        np.array([tenure]),
        np.array([recent]),
        np.array([earlier]),
        LifecycleConfig(**cfg) if cfg else None,
    )
    return str(out[0])


def test_each_stage_from_the_rules() -> None:
    assert stage(recency=200, tenure=400, recent=0, earlier=10) == "dormant"
    assert stage(recency=180, tenure=400, recent=0, earlier=10) == "dormant"  # boundary
    assert stage(recency=10, tenure=60, recent=3, earlier=0) == "new"
    assert stage(recency=200, tenure=200, recent=0, earlier=1) == "dormant"  # dormant first
    # tenure 390 d → earlier span 300 d; 10 earlier visits → expected 3 visits per 90 days
    assert stage(recency=95, tenure=390, recent=0, earlier=10) == "declining"  # recency rule
    assert stage(recency=5, tenure=390, recent=1, earlier=10) == "declining"  # 1 < 0.5 x 3
    assert stage(recency=5, tenure=390, recent=2, earlier=10) == "mature"  # 1.5 <= 2 < 4.5
    assert stage(recency=5, tenure=390, recent=5, earlier=10) == "growing"  # 5 >= 4.5
    assert stage(recency=5, tenure=390, recent=3, earlier=10) == "mature"


def test_new_boundary_and_short_history_normalisation() -> None:
    # exactly 90 days of tenure is no longer new; the earlier span is floored at 90 days
    assert stage(recency=5, tenure=90, recent=1, earlier=0) == "mature"
    # tenure 100 d: 1 earlier visit over max(10, 90) days → expected 1, so 2 recent = growing
    assert stage(recency=5, tenure=100, recent=2, earlier=1) == "growing"


def test_growing_needs_a_minimum_number_of_recent_visits() -> None:
    # a rare buyer (2 visits in ~3 years, expected 0.2) with one recent visit is not growing
    assert stage(recency=5, tenure=1000, recent=1, earlier=2) == "mature"
    assert stage(recency=5, tenure=1000, recent=1, earlier=2, growing_min_visits=1) == "growing"


def test_lifecycle_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="declining_ratio"):
        LifecycleConfig(declining_ratio=2.0)
    with pytest.raises(ConfigError, match="dormant_days"):
        LifecycleConfig(dormant_days=float("nan"))
    with pytest.raises(ConfigError, match="high_min"):
        RfmConfig(high_min=7, medium_min=8)


def test_quintile_scores_by_rank_with_ties_taking_the_lower_score() -> None:
    assert quintile_scores(np.array([50, 10, 40, 20, 30])).tolist() == [5, 1, 4, 2, 3]
    assert quintile_scores(np.arange(10)).tolist() == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    # six one-visit customers share the lowest score; ties never split across scores
    assert quintile_scores(np.array([1, 1, 1, 1, 1, 1, 2, 3, 5, 8])).tolist() == [
        1,
        1,
        1,
        1,
        1,
        1,
        4,
        4,
        5,
        5,
    ]
    assert quintile_scores(np.array([])).tolist() == []


def test_rfm_scores_reward_recent_frequent_big_spenders() -> None:
    r, f, m = rfm_scores(np.array([1.0, 300.0]), np.array([9, 1]), np.array([500.0, 5.0]))
    assert r.tolist() == [3, 1] and f.tolist() == [3, 1] and m.tolist() == [3, 1]


def test_value_tier_thresholds() -> None:
    r = np.array([5, 4, 4, 3, 3, 1])
    f = np.array([5, 4, 4, 3, 2, 1])
    m = np.array([5, 4, 3, 2, 2, 5])  # sums 15, 12, 11, 8, 7, 7
    assert value_tier(r, f, m).tolist() == ["high", "high", "medium", "medium", "low", "low"]
    assert value_tier(r, f, m, RfmConfig(high_min=15, medium_min=12)).tolist() == [
        "high",
        "medium",
        "low",
        "low",
        "low",
        "low",
    ]


def test_segments_cover_the_grid_exactly_once() -> None:
    r, f = (np.array(x) for x in zip(*itertools.product(range(1, 6), repeat=2), strict=True))
    segments = rfm_segment(r, f)
    assert set(segments) == set(RFM_SEGMENTS)  # every segment reachable, no gaps ("")
    table = dict(zip(zip(r.tolist(), f.tolist(), strict=True), segments, strict=True))
    assert table[(5, 5)] == table[(5, 4)] == "champions"
    assert table[(4, 5)] == table[(3, 4)] == "loyal"
    assert table[(5, 2)] == table[(3, 3)] == "potential_loyalist"
    assert table[(5, 1)] == table[(3, 1)] == "new_customer"
    assert table[(1, 5)] == table[(2, 5)] == "cant_lose"
    assert table[(2, 3)] == table[(1, 4)] == "at_risk"
    assert table[(2, 2)] == table[(2, 1)] == "hibernating"
    assert table[(1, 1)] == table[(1, 2)] == "lost"
    with pytest.raises(ValueError, match=r"1\.\.5"):
        rfm_segment(np.array([0]), np.array([1]))


def _visits(customer: str, days_before_t: list[int], amount: float = 10.0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": customer,
            "timestamp": [T - pd.Timedelta(days=d) for d in days_before_t],
            "amount": amount,
        }
    )


def test_stages_and_tiers_end_to_end() -> None:
    weekly = list(range(1, 400, 7))
    tx = pd.concat(
        [
            _visits("dormant", [200, 300, 400]),
            _visits("new", [10, 40]),
            _visits("declining", [100, *range(120, 400, 10)]),
            # 2 visits per 90 days for 300 days before, then 8 visits in the last 90
            _visits("growing", [5, 15, 25, 35, 45, 55, 65, 75, *range(100, 400, 45)]),
            _visits("mature", weekly, amount=50.0),
        ],
        ignore_index=True,
    )
    snap = build_features(None, tx, None, T, spec=FeatureSpec())
    assert snap.lifecycle_stage.to_dict() == {
        "declining": "declining",
        "dormant": "dormant",
        "growing": "growing",
        "mature": "mature",
        "new": "new",
    }
    # one-hot columns agree with the strings
    onehot = snap.to_frame().filter(like="lifecycle__")
    assert (onehot.sum(axis=1) == 1).all()
    assert onehot.idxmax(axis=1).str.removeprefix("lifecycle__").to_dict() == (
        snap.lifecycle_stage.to_dict()
    )
    # the weekly big spender is the most recent, frequent and valuable customer
    assert snap.profile.loc["mature", ["r_score", "f_score", "m_score"]].tolist() == [5, 5, 5]
    assert snap.value_tier["mature"] == "high"
    assert snap.rfm_segment["mature"] == "champions"
    assert snap.profile.loc["dormant", ["r_score", "f_score"]].tolist() == [1, 2]
    assert snap.rfm_segment["dormant"] == "lost"
    assert snap.value_tier["dormant"] == "low"
    assert snap.column("value_tier__high")[snap.customer_ids.get_loc("mature")] == 1.0
