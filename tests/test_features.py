"""Features: hand-computed values on tiny frames, leakage, fixed columns, optional columns."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedcrm.errors import ConfigError, DataError
from fedcrm.models import (
    CategoryVocabulary,
    FeatureSnapshot,
    FeatureSpec,
    build_features,
    build_store_features,
    population,
    purchase_history,
)

T = pd.Timestamp("2024-07-01")
VOCAB = CategoryVocabulary.from_categories(["baby/formula", "baby/diapers", "food/snacks", "toys"])
SPEC = FeatureSpec.from_vocabulary(VOCAB)


def at(days_before: float, hour: int = 0) -> pd.Timestamp:
    return T - pd.Timedelta(days=days_before) + pd.Timedelta(hours=hour)


def frame(rows: list[dict[str, object]]) -> pd.DataFrame:
    out = pd.DataFrame(rows)
    out["timestamp"] = pd.to_datetime(out["timestamp"])
    return out


def transactions() -> pd.DataFrame:
    """Customer "a": visits 100, 40 (two lines) and 10 days before T; "b": one line."""
    return frame(
        [
            {
                "customer_id": "a",
                "timestamp": at(100, 9),
                "amount": 30.0,
                "category": "baby/formula",
                "channel": "pos",
                "discount": 0.0,
            },
            {
                "customer_id": "a",
                "timestamp": at(40, 9),
                "amount": 20.0,
                "category": "Baby/Diapers",
                "channel": "app",
                "discount": 5.0,
            },
            {
                "customer_id": "a",
                "timestamp": at(40, 18),
                "amount": 10.0,
                "category": "garden/hose",
                "channel": "tv_shopping",
                "discount": None,
            },
            {
                "customer_id": "a",
                "timestamp": at(10, 9),
                "amount": 40.0,
                "category": None,
                "channel": None,
                "discount": 0.0,
            },
            {
                "customer_id": "b",
                "timestamp": at(20),
                "amount": 8.0,
                "category": "toys",
                "channel": "web",
                "discount": 2.0,
            },
        ]
    )


def interactions() -> pd.DataFrame:
    return frame(
        [
            {"customer_id": "a", "timestamp": at(5), "kind": "view", "score": None},
            {"customer_id": "a", "timestamp": at(6), "kind": "View", "score": None},
            {"customer_id": "a", "timestamp": at(120), "kind": "view", "score": None},  # > 90 d
            {"customer_id": "a", "timestamp": at(200), "kind": "complaint", "score": None},
            {"customer_id": "a", "timestamp": at(30), "kind": "review", "score": 4.0},
            {"customer_id": "a", "timestamp": at(300), "kind": "review", "score": 2.0},
            {"customer_id": "b", "timestamp": at(1), "kind": "unheard_of", "score": 5.0},
            {"customer_id": "zz", "timestamp": at(1), "kind": "view", "score": None},  # no tx
        ]
    )


def customers() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": ["a", "b", "x"],
            "gender": ["f", None, "M"],
            "age_band": ["25-29", "65+", "30-39"],
            "member_tier": ["Gold", "diamond", "silver"],
            "region": ["east_china", None, "south_china"],
            "joined_at": pd.to_datetime(["2023-07-01", "2024-08-01", "2020-01-01"]),
        }
    )


def features(**kwargs: object) -> FeatureSnapshot:
    args = {
        "customers": customers(),
        "transactions": transactions(),
        "interactions": interactions(),
        "cutoff": T,
        "spec": SPEC,
    } | kwargs
    return build_features(**args)  # type: ignore[arg-type]


def value(snap: FeatureSnapshot, customer: str, name: str) -> float:
    return float(snap.column(name)[snap.customer_ids.get_loc(customer)])


def raw(snap: FeatureSnapshot, customer: str, name: str) -> float:
    """Undo the log1p transform."""
    return math.expm1(value(snap, customer, name))


def test_population_and_row_order() -> None:
    snap = features()
    assert snap.customer_ids.tolist() == ["a", "b"]  # "x" never bought, "zz" only interacted
    assert population(transactions(), T).tolist() == ["a", "b"]
    assert snap.matrix.dtype == np.float32 and snap.matrix.shape == (2, len(SPEC))
    assert not snap.matrix.flags.writeable
    assert np.isfinite(snap.matrix).all()


def test_recency_frequency_monetary_and_windows() -> None:
    snap = features()
    assert raw(snap, "a", "recency_days_log1p") == pytest.approx(10 - 9 / 24, rel=1e-6)
    assert raw(snap, "a", "tenure_days_log1p") == pytest.approx(100 - 9 / 24, rel=1e-6)
    assert raw(snap, "a", "visits_log1p") == pytest.approx(3)  # two lines on day 40 = 1 visit
    assert raw(snap, "a", "visits_30d_log1p") == pytest.approx(1)
    assert raw(snap, "a", "visits_90d_log1p") == pytest.approx(2)
    assert raw(snap, "a", "visits_180d_log1p") == pytest.approx(3)
    assert raw(snap, "a", "lines_per_visit_log1p") == pytest.approx(4 / 3, rel=1e-6)
    assert raw(snap, "a", "spend_log1p") == pytest.approx(100, rel=1e-6)
    assert raw(snap, "a", "spend_per_visit_log1p") == pytest.approx(100 / 3, rel=1e-6)
    assert raw(snap, "a", "spend_30d_log1p") == pytest.approx(40, rel=1e-6)
    assert raw(snap, "a", "spend_90d_log1p") == pytest.approx(70, rel=1e-6)
    assert raw(snap, "a", "spend_180d_log1p") == pytest.approx(100, rel=1e-6)
    assert raw(snap, "b", "spend_30d_log1p") == pytest.approx(8, rel=1e-6)
    # member tenure: joined 2023-07-01 = 366 days before T; b's joined_at is after T
    assert raw(snap, "a", "member_tenure_days_log1p") == pytest.approx(366, rel=1e-6)
    assert value(snap, "a", "has_joined_at") == 1.0
    assert value(snap, "b", "has_joined_at") == 0.0
    assert value(snap, "b", "member_tenure_days_log1p") == 0.0


def test_inter_purchase_statistics() -> None:
    snap = features()
    # visit days 100, 40, 10 before T: gaps 60 and 30 → mean 45, std 15
    assert raw(snap, "a", "gap_mean_days_log1p") == pytest.approx(45, rel=1e-6)
    assert raw(snap, "a", "gap_std_days_log1p") == pytest.approx(15, rel=1e-6)
    assert raw(snap, "a", "recency_gap_ratio_log1p") == pytest.approx((10 - 9 / 24) / 45, rel=1e-5)
    assert value(snap, "a", "single_visit") == 0.0
    # single-visit customers: documented fill values
    for name in ("gap_mean_days_log1p", "gap_std_days_log1p", "recency_gap_ratio_log1p"):
        assert value(snap, "b", name) == 0.0
    assert value(snap, "b", "single_visit") == 1.0


def test_gap_ratio_is_capped() -> None:
    tx = frame([{"customer_id": "c", "timestamp": at(d), "amount": 1.0} for d in (301, 300)])
    snap = build_features(None, tx, None, T, spec=SPEC)
    assert raw(snap, "c", "recency_gap_ratio_log1p") == pytest.approx(SPEC.gap_ratio_cap)


def test_channel_shares() -> None:
    snap = features()
    shares = snap.to_frame().filter(like="channel_share__")
    # a: pos, app, tv_shopping (→ other); the null channel line is left out
    assert shares.loc[
        "a", ["channel_share__pos", "channel_share__app", "channel_share__other"]
    ].tolist() == pytest.approx([1 / 3] * 3)
    assert shares.loc["b", "channel_share__web"] == 1.0
    np.testing.assert_allclose(shares.sum(axis=1), 1.0, rtol=1e-6)


def test_category_shares_over_top_levels() -> None:
    snap = features()
    cats = snap.to_frame().filter(like="category_share__")
    assert list(cats.columns) == [f"category_share__{c}" for c in ("baby", "food", "toys", "other")]
    # a: formula + diapers (baby), garden (other); the null category line is left out
    assert cats.loc["a"].tolist() == pytest.approx([2 / 3, 0, 0, 1 / 3])
    assert cats.loc["b"].tolist() == [0, 0, 1, 0]
    np.testing.assert_allclose(cats.sum(axis=1), 1.0, rtol=1e-6)


def test_discount_sensitivity() -> None:
    snap = features()
    # a: known discounts on 3 lines (0, 5, 0), spend 30 + 20 + 40 = 90 of which 20 discounted
    assert value(snap, "a", "discount_line_share") == pytest.approx(1 / 3)
    assert value(snap, "a", "discount_spend_share") == pytest.approx(20 / 90)
    assert value(snap, "b", "discount_line_share") == 1.0
    assert value(snap, "a", "has_discount_data") == 1.0


def test_interaction_features() -> None:
    snap = features()
    assert raw(snap, "a", "interactions_90d_log1p__view") == pytest.approx(2)  # case-folded
    assert raw(snap, "a", "interactions_90d_log1p__review") == pytest.approx(1)
    assert raw(snap, "a", "interactions_90d_log1p__complaint") == 0.0
    assert raw(snap, "a", "complaints_log1p") == pytest.approx(1)  # lifetime
    assert value(snap, "a", "review_score_mean_scaled") == pytest.approx(3 / 5)
    assert value(snap, "a", "has_review_score") == 1.0
    b = snap.to_frame().loc["b"].filter(like="interactions_")
    assert (b == 0).all()  # unknown kinds are ignored
    assert value(snap, "b", "has_interaction_data") == 1.0


def test_attributes_one_hot_with_fallbacks() -> None:
    frame_ = features().to_frame()
    hot = lambda who, prefix: frame_.loc[who].filter(like=prefix).idxmax()  # noqa: E731
    assert hot("a", "gender__") == "gender__F"
    assert hot("b", "gender__") == "gender__U"
    assert hot("a", "age_band__") == "age_band__25-34"  # 25-29 lies in 25-34
    assert hot("b", "age_band__") == "age_band__65+"
    assert hot("a", "member_tier__") == "member_tier__gold"
    assert hot("b", "member_tier__") == "member_tier__unknown"
    assert hot("a", "region__") == "region__east_china"
    assert hot("b", "region__") == "region__other"
    for prefix in ("gender__", "age_band__", "member_tier__", "region__", "lifecycle__"):
        assert (frame_.filter(like=prefix).sum(axis=1) == 1).all()


def test_missing_optional_columns_keep_the_same_columns() -> None:
    minimal = transactions()[["customer_id", "timestamp", "amount"]]
    snap = build_features(None, minimal, None, T, spec=SPEC)
    assert snap.feature_names == SPEC.feature_names
    assert np.isfinite(snap.matrix).all()
    frame_ = snap.to_frame()
    zero = [
        c
        for c in frame_.columns
        if c.startswith(("channel_share", "category_share", "discount", "interactions_"))
    ]
    assert (frame_[zero] == 0).all().all()
    for flag in (
        "has_channel_data",
        "has_category_data",
        "has_discount_data",
        "has_interaction_data",
        "has_review_score",
        "has_joined_at",
    ):
        assert (frame_[flag] == 0).all()
    assert (frame_["gender__U"] == 1).all() and (frame_["region__other"] == 1).all()
    # the activity features do not depend on the optional columns
    full = features()
    for name in ("recency_days_log1p", "visits_90d_log1p", "spend_log1p", "gap_std_days_log1p"):
        np.testing.assert_array_equal(snap.column(name), full.column(name))
    # an empty interactions frame is the same as none
    empty = interactions().iloc[0:0]
    np.testing.assert_array_equal(
        build_features(None, minimal, empty, T, spec=SPEC).matrix, snap.matrix
    )


def test_fixed_columns_across_stores_with_different_data() -> None:
    other = frame(
        [
            {
                "customer_id": "q",
                "timestamp": at(3),
                "amount": 5.0,
                "category": "pets/food",
                "channel": "live_stream",
            }
        ]
    )
    snap = build_features(None, other, None, T, spec=SPEC)
    assert snap.feature_names == features().feature_names
    assert value(snap, "q", "category_share__other") == 1.0
    assert value(snap, "q", "channel_share__live_stream") == 1.0


def test_feature_spec_order_roundtrip_and_validation() -> None:
    names = SPEC.feature_names
    assert len(names) == len(set(names)) == len(SPEC)
    assert names[:4] == (
        "recency_days_log1p",
        "tenure_days_log1p",
        "member_tenure_days_log1p",
        "has_joined_at",
    )
    assert FeatureSpec.from_dict(SPEC.to_dict()) == SPEC
    with pytest.raises(ConfigError, match="unknown FeatureSpec keys"):
        FeatureSpec.from_dict({"colour": 1})
    with pytest.raises(ConfigError, match="windows"):
        FeatureSpec(windows=(90, 30))
    with pytest.raises(ConfigError, match="reserved"):
        FeatureSpec(top_categories=("other",))


def test_leakage_rows_at_or_after_cutoff_are_never_read() -> None:
    base = features()
    later_tx = frame(
        [
            # rows exactly at T and after it, for known and new customers, with odd values
            {
                "customer_id": "a",
                "timestamp": T,
                "amount": 1e6,
                "category": "pets/x",
                "channel": "web",
                "discount": 99.0,
            },
            {
                "customer_id": "b",
                "timestamp": at(-3),
                "amount": 5e5,
                "category": "baby/formula",
                "channel": "pos",
                "discount": 1.0,
            },
            {
                "customer_id": "new",
                "timestamp": T,
                "amount": 1.0,
                "category": "toys",
                "channel": "app",
                "discount": 0.0,
            },
        ]
    )
    later_ix = frame(
        [
            {"customer_id": "a", "timestamp": T, "kind": "complaint", "score": None},
            {"customer_id": "b", "timestamp": at(-1), "kind": "review", "score": 1.0},
        ]
    )
    leaky = features(
        transactions=pd.concat([transactions(), later_tx], ignore_index=True),
        interactions=pd.concat([interactions(), later_ix], ignore_index=True),
    )
    assert leaky.customer_ids.equals(base.customer_ids)  # "new" only bought at T
    np.testing.assert_array_equal(leaky.matrix, base.matrix)
    pd.testing.assert_frame_equal(leaky.profile, base.profile)
    # and without a spec, the derived category columns ignore post-cutoff categories too
    with pytest.warns(UserWarning, match="no FeatureSpec"):
        derived = build_features(None, pd.concat([transactions(), later_tx]), None, T)
    assert "category_share__pets" not in derived.feature_names


def test_leakage_test_can_fail_when_a_pre_cutoff_row_changes() -> None:
    tx = transactions()
    tx.loc[4, "amount"] = 9.0  # b's only line, 20 days before T
    changed = features(transactions=tx)
    assert raw(changed, "b", "spend_log1p") == pytest.approx(9.0, rel=1e-6)
    assert not np.array_equal(changed.matrix, features().matrix)
    tx = transactions()
    tx.loc[3, "timestamp"] = T - pd.Timedelta(microseconds=1)  # just before T is read
    assert raw(features(transactions=tx), "a", "recency_days_log1p") < 1e-6


def test_store_object_protocol() -> None:
    @dataclasses.dataclass(frozen=True)
    class Store:
        store_id: str
        customers: pd.DataFrame
        transactions: pd.DataFrame
        interactions: pd.DataFrame

    store = Store("s1", customers(), transactions(), interactions())
    np.testing.assert_array_equal(
        build_store_features(store, T, spec=SPEC).matrix, features().matrix
    )


def test_input_errors_are_clear() -> None:
    with pytest.raises(DataError, match="amount"):
        build_features(None, transactions().drop(columns="amount"), None, T, spec=SPEC)
    bad = transactions().assign(timestamp=lambda f: f["timestamp"].astype(str))
    with pytest.raises(DataError, match="datetime64"):
        build_features(None, bad, None, T, spec=SPEC)
    with pytest.raises(ConfigError, match="naive"):
        build_features(None, transactions(), None, pd.Timestamp(T, tz="UTC"), spec=SPEC)
    with pytest.raises(ConfigError, match="not a timestamp"):
        build_features(None, transactions(), None, "soon", spec=SPEC)


def test_purchase_history_counts_before_cutoff() -> None:
    tx = pd.concat(
        [
            transactions(),
            frame([{"customer_id": "a", "timestamp": T, "amount": 1.0, "category": "toys"}]),
        ],
        ignore_index=True,
    )
    hist = purchase_history(pd.Index(["b", "a"]), tx, T, VOCAB)
    assert hist.shape == (2, len(VOCAB))
    dense = hist.to_dense()
    # tokens: unknown, baby/diapers, baby/formula, food/snacks, toys
    assert dense.tolist() == [[0, 0, 0, 0, 1], [1, 1, 1, 0, 0]]


def test_empty_population_gives_an_empty_snapshot() -> None:
    only_later = frame([{"customer_id": "a", "timestamp": T, "amount": 1.0, "category": "toys"}])
    snap = build_features(None, only_later, None, T, spec=SPEC)
    assert len(snap) == 0 and snap.matrix.shape == (0, len(SPEC))
    assert list(snap.profile.columns)[:3] == ["lifecycle_stage", "value_tier", "rfm_segment"]
    assert purchase_history(snap.customer_ids, only_later, T, VOCAB).shape == (0, len(VOCAB))


def test_every_feature_is_documented() -> None:
    doc = (Path(__file__).parents[1] / "docs" / "features.md").read_text(encoding="utf-8")
    for name in SPEC.feature_names:
        stem, sep, _ = name.partition("__")
        stem = re.sub(r"_\d+d_", "_<iw>d_" if stem.startswith("interactions") else "_<w>d_", stem)
        assert f"`{stem}{sep}" in doc, f"{name} is not in docs/features.md"


def test_feature_spec_rejects_names_that_could_never_match() -> None:
    for bad in (
        {"top_categories": ("Baby",)},
        {"top_categories": ("baby/formula",)},
        {"channels": ("POS",)},
    ):
        with pytest.raises(ConfigError, match="lower-case, one level"):
            FeatureSpec(**bad)  # type: ignore[arg-type]
