"""Analytics queries: public cells, hand-computed store counts, clipping, per-customer bounds,
tables from noisy totals, and every query on a real prepared store."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from conftest import tiny_store_data
from fedcrm.analytics.queries import (
    LIFECYCLE_STAGES,
    QUERY_NAMES,
    VALUE_TIERS,
    QueryContext,
    StoreView,
    build_query,
    consent_coverage_counts,
)
from fedcrm.clients.preparation import PreparationRequest, prepare_store
from fedcrm.data.store import load_store
from fedcrm.errors import ConfigError, DataError
from fedcrm.models.vocabulary import CategoryVocabulary
from fedcrm.privacy.consent import restrict_to_customers
from fedcrm.synthetic.chain import ChainParams, chain_categories, generate_chain

CATEGORIES = ("baby/diapers", "baby/infant_formula", "beauty/skincare", "food/fruit", "food/snacks")
VOCAB = CategoryVocabulary.from_categories(CATEGORIES)
CUTOFF = pd.Timestamp("2025-01-01")
# customer: (lifecycle stage, value tier, churned)
PROFILE = {
    "a": ("new", "high", 1),
    "b": ("mature", "high", 0),
    "c": ("dormant", "low", 1),
    "d": ("mature", "medium", 0),
}
LINES = (
    ("a", "2024-10-05 10:00", "baby/infant_formula"),
    ("a", "2024-10-05 10:00", "baby/diapers"),
    ("a", "2024-11-10 09:00", "food/snacks"),
    ("a", "2024-12-20 18:00", "baby/diapers"),
    ("b", "2023-06-01 12:00", "food/snacks"),  # before the 12-month window
    ("b", "2024-03-01 12:00", "food/fruit"),
    ("b", "2024-03-01 12:00", "beauty/skincare"),
    ("b", "2024-03-01 12:00", "food/snacks"),
    ("b", "2024-05-02 08:00", "food/fruit"),
    ("c", "2024-02-10 15:00", "baby/diapers"),
    ("c", "2024-02-10 15:00", "beauty/skincare"),
    ("c", "2024-03-05 10:00", "toys/lego"),  # not in the taxonomy
    ("c", "2024-04-03 11:00", "food/snacks"),
    ("c", "2024-04-03 11:00", "food/snacks"),
    ("d", "2024-07-15 10:00", None),
    ("d", "2025-01-10 10:00", "food/snacks"),  # after the cutoff
)
COVERAGE = {"customers": 10, "analytics": 7, "model_training": 5, "marketing": 2}
CONTEXT = QueryContext(vocabulary=VOCAB)


def _prepared(
    profile: dict[str, tuple[str, str, int]] = PROFILE,
    lines: tuple[tuple[str, str, str | None], ...] = LINES,
    cutoff: pd.Timestamp = CUTOFF,
    labels: bool = True,
) -> SimpleNamespace:
    """A PreparedStore look-alike with the attributes the queries read."""
    ids = pd.Index(sorted(profile), name="customer_id")
    frame = pd.DataFrame(
        [profile[c][:2] for c in ids], index=ids, columns=["lifecycle_stage", "value_tier"]
    )
    churn = np.array([profile[c][2] for c in ids], dtype=np.float64)
    tx = pd.DataFrame(
        [row for row in lines if row[0] in profile],
        columns=["customer_id", "timestamp", "category"],
    )
    tx["timestamp"] = pd.to_datetime(tx["timestamp"], format="ISO8601").astype("datetime64[ns]")
    tx["amount"] = 10.0
    return SimpleNamespace(
        store_id="s1",
        features=SimpleNamespace(customer_ids=ids, cutoff=cutoff, profile=frame),
        labels=SimpleNamespace(customer_ids=ids, churn=churn) if labels else None,
        transactions=tx,
        vocabulary=VOCAB,
    )


def _view(fmt: str = "mall", **kwargs: Any) -> StoreView:
    return StoreView(fmt, _prepared(**kwargs), COVERAGE)  # type: ignore[arg-type]


def _without(prepared: Any, customer: str) -> SimpleNamespace:
    """``prepared`` (fixture or real) without one customer."""
    f = prepared.features
    keep = f.customer_ids != customer
    labels = prepared.labels
    if labels is not None:
        rows = labels.customer_ids != customer
        labels = SimpleNamespace(customer_ids=labels.customer_ids[rows], churn=labels.churn[rows])
    tx = prepared.transactions
    return SimpleNamespace(
        features=SimpleNamespace(
            customer_ids=f.customer_ids[keep], cutoff=f.cutoff, profile=f.profile.loc[keep]
        ),
        labels=labels,
        transactions=tx.loc[tx["customer_id"] != customer],
    )


def _nonzero(query: Any, counts: np.ndarray) -> dict[tuple[str, ...], int]:
    return {cell: int(n) for cell, n in zip(query.cells, counts, strict=True) if n}


# -- cells ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", QUERY_NAMES)
def test_cells_are_public_and_fixed_by_the_context(name):
    query = build_query(name, CONTEXT)
    assert build_query(name, QueryContext(vocabulary=VOCAB)).cells == query.cells
    assert all(len(cell) == len(query.dimensions) for cell in query.cells)
    small = _view("livestream", profile={"b": PROFILE["b"]})  # another store's data
    for view in (_view(), small):
        counts = query.counts(view)
        assert counts.dtype == np.int64 and counts.shape == (len(query.cells),)
        assert (counts >= 0).all()


def test_cell_layouts():
    ctx = QueryContext(vocabulary=VOCAB, cohort_start=pd.Timestamp("2024-03-15"), cohort_months=2)
    q = {name: build_query(name, ctx) for name in QUERY_NAMES}
    assert q["lifecycle_funnel"].cells == tuple((s,) for s in LIFECYCLE_STAGES)
    assert q["lifecycle_by_format"].cells[:2] == (("flagship", "new"), ("flagship", "growing"))
    assert len(q["lifecycle_by_format"].cells) == 5 * 5
    assert q["value_by_lifecycle"].cells[0] == ("high", "new")
    assert q["churn_by_segment"].cells[0] == ("customers", "high/new")
    assert q["churn_by_segment"].cells[-1] == ("churned", "low/dormant")
    assert q["category_shares"].cells == (("__customers__",), *((c,) for c in CATEGORIES))
    assert q["co_purchase"].cells == (
        ("customers", "", ""),
        ("single", "baby", ""),
        ("single", "beauty", ""),
        ("single", "food", ""),
        ("pair", "baby", "beauty"),
        ("pair", "baby", "food"),
        ("pair", "beauty", "food"),
    )
    assert len(q["purchase_sequence"].cells) == 1 + 3 + 6  # ordered pairs
    assert q["cohort_retention"].cells[:2] == (("2024-03", "0"), ("2024-03", "1"))
    assert q["cohort_retention"].cells[-1] == ("2024-04", "6")
    assert q["consent_coverage"].cells == (
        ("customers",),
        ("analytics",),
        ("model_training",),
        ("marketing",),
    )
    default = build_query("cohort_retention", QueryContext(retention_months=1))
    assert [c[0] for c in default.cells[::2]] == [f"T-{k}" for k in range(12, 0, -1)]


def test_l2_bounds():
    ctx = QueryContext(vocabulary=VOCAB, max_categories_per_customer=3, max_pairs_per_customer=6)
    bounds = {name: build_query(name, ctx).l2_sensitivity for name in QUERY_NAMES}
    assert bounds == pytest.approx(
        {
            "lifecycle_funnel": 1.0,
            "lifecycle_by_format": 1.0,
            "value_by_lifecycle": 1.0,
            "churn_by_segment": math.sqrt(2),
            "category_shares": 2.0,
            "co_purchase": math.sqrt(10),
            "purchase_sequence": math.sqrt(10),
            "cohort_retention": math.sqrt(7),
            "consent_coverage": 2.0,
        }
    )


# -- hand-computed counts -----------------------------------------------------------------


def _counts(name: str, context: QueryContext = CONTEXT, **kwargs: Any) -> np.ndarray:
    return build_query(name, context).counts(_view(**kwargs))


def test_lifecycle_value_and_churn_counts():
    assert _counts("lifecycle_funnel").tolist() == [1, 0, 2, 0, 1]
    by_format = _counts("lifecycle_by_format").reshape(5, 5)
    assert by_format[1].tolist() == [1, 0, 2, 0, 1] and by_format.sum() == 4  # mall only
    other = _counts("lifecycle_by_format", fmt="kiosk").reshape(5, 5)
    assert other[4].tolist() == [1, 0, 2, 0, 1] and other.sum() == 4  # unlisted → other
    q = build_query("value_by_lifecycle", CONTEXT)
    assert _nonzero(q, q.counts(_view())) == {
        ("high", "new"): 1,
        ("high", "mature"): 1,
        ("medium", "mature"): 1,
        ("low", "dormant"): 1,
    }
    q = build_query("churn_by_segment", CONTEXT)
    assert _nonzero(q, q.counts(_view())) == {
        ("customers", "high/new"): 1,
        ("customers", "high/mature"): 1,
        ("customers", "medium/mature"): 1,
        ("customers", "low/dormant"): 1,
        ("churned", "high/new"): 1,
        ("churned", "low/dormant"): 1,
    }


def test_category_shares_counts_and_clipping_ties_by_name():
    # customers with a known category in the window: a, b, c (d has none; after-cutoff ignored)
    assert _counts("category_shares").tolist() == [3, 2, 1, 2, 1, 3]
    one = QueryContext(vocabulary=VOCAB, max_categories_per_customer=1)
    assert _counts("category_shares", one).tolist() == [3, 1, 0, 0, 1, 1]  # most-bought only
    two = QueryContext(vocabulary=VOCAB, max_categories_per_customer=2)
    assert _counts("category_shares", two).tolist() == [3, 2, 1, 1, 1, 1]


def test_co_purchase_counts():
    # parents: a buys baby and food but never in one basket; b: {beauty, food}; c: {baby, beauty}
    assert _counts("co_purchase").tolist() == [3, 2, 2, 3, 1, 0, 1]
    ctx = QueryContext(vocabulary=VOCAB, pair_level="category", max_pairs_per_customer=1)
    q = build_query("co_purchase", ctx)
    pairs = {k: v for k, v in _nonzero(q, q.counts(_view())).items() if k[0] == "pair"}
    assert pairs == {  # b's three pairs tie (one basket each): the first by name is kept
        ("pair", "baby/diapers", "baby/infant_formula"): 1,
        ("pair", "beauty/skincare", "food/fruit"): 1,
        ("pair", "baby/diapers", "beauty/skincare"): 1,
    }


def test_purchase_sequence_counts():
    q = build_query("purchase_sequence", CONTEXT)
    assert _nonzero(q, q.counts(_view())) == {
        ("customers", "", ""): 3,
        ("single", "baby", ""): 2,
        ("single", "beauty", ""): 2,
        ("single", "food", ""): 3,
        ("pair", "baby", "food"): 2,  # a and c; b bought food and beauty at the same time
        ("pair", "beauty", "food"): 1,
    }
    ctx = QueryContext(vocabulary=VOCAB, pair_level="category")
    q = build_query("purchase_sequence", ctx)
    pairs = {k: v for k, v in _nonzero(q, q.counts(_view())).items() if k[0] == "pair"}
    assert pairs == {
        ("pair", "baby/diapers", "food/snacks"): 2,
        ("pair", "baby/infant_formula", "food/snacks"): 1,
        ("pair", "beauty/skincare", "food/snacks"): 1,
    }


def test_cohort_retention_counts():
    ctx = QueryContext(
        cohort_start=pd.Timestamp("2023-06-01"), cohort_months=18, retention_months=3
    )
    q = build_query("cohort_retention", ctx)
    expected = {
        ("2023-06", "0"): 1,  # b; its 2024 purchases are beyond month 3
        ("2024-02", "0"): 1,  # c, also in March (an unknown category counts) and April
        ("2024-02", "1"): 1,
        ("2024-02", "2"): 1,
        ("2024-07", "0"): 1,  # d; January 2025 is after the cutoff
        ("2024-10", "0"): 1,  # a
        ("2024-10", "1"): 1,
        ("2024-10", "2"): 1,
    }
    assert _nonzero(q, q.counts(_view())) == expected
    # with the cutoff inside December, a's December month is incomplete: not counted
    partial = q.counts(_view(cutoff=pd.Timestamp("2024-12-21")))
    assert _nonzero(q, partial) == {k: v for k, v in expected.items() if k != ("2024-10", "2")}
    default = build_query("cohort_retention", QueryContext(retention_months=3))
    assert _nonzero(default, default.counts(_view())) == {
        ("T-11", "0"): 1,
        ("T-11", "1"): 1,
        ("T-11", "2"): 1,
        ("T-6", "0"): 1,
        ("T-3", "0"): 1,
        ("T-3", "1"): 1,
        ("T-3", "2"): 1,
    }


def test_consent_coverage_counts_and_helper():
    assert _counts("consent_coverage").tolist() == [10, 7, 5, 2]
    store = tiny_store_data()
    as_of = pd.Timestamp("2024-06-01")
    counts = consent_coverage_counts(store, as_of)
    assert counts == {"customers": 3, "analytics": 2, "model_training": 1, "marketing": 0}
    query = build_query("consent_coverage", CONTEXT)
    full = query.counts(StoreView("mall", _prepared(), counts))  # type: ignore[arg-type]
    for cid in ("0001", "0002", "0003"):
        rest = pd.Index([c for c in ("0001", "0002", "0003") if c != cid])
        fewer = consent_coverage_counts(restrict_to_customers(store, rest), as_of)
        part = full - query.counts(StoreView("mall", _prepared(), fewer))  # type: ignore[arg-type]
        assert (part >= 0).all() and np.linalg.norm(part) <= query.l2_sensitivity + 1e-9


# -- per-customer bounds and clipping ------------------------------------------------------

ALL_CONTEXTS = (
    CONTEXT,
    QueryContext(
        vocabulary=VOCAB,
        pair_level="category",
        max_categories_per_customer=2,
        max_pairs_per_customer=1,
        cohort_start=pd.Timestamp("2023-06-01"),
        cohort_months=18,
        retention_months=2,
    ),
)


@pytest.mark.parametrize("context", ALL_CONTEXTS)
@pytest.mark.parametrize("name", [n for n in QUERY_NAMES if n != "consent_coverage"])
def test_each_customer_changes_the_counts_by_at_most_the_bound(name, context):
    query = build_query(name, context)
    prepared = _prepared()
    full = query.counts(StoreView("mall", prepared, COVERAGE))  # type: ignore[arg-type]
    for customer in PROFILE:
        part = full - query.counts(StoreView("mall", _without(prepared, customer), COVERAGE))  # type: ignore[arg-type]
        assert (part >= 0).all()
        assert np.linalg.norm(part) <= query.l2_sensitivity + 1e-9


MANY = tuple(f"misc/c{i:02d}" for i in range(50))
MANY_VOCAB = CategoryVocabulary.from_categories(MANY)


def _heavy_view(lines: list[tuple[str, str, str]]) -> StoreView:
    profile = {"z": ("mature", "high", 0), "y": ("new", "low", 1)}
    rows = (*lines, ("y", "2024-05-01 10:00", "misc/c07"))
    return StoreView("mall", _prepared(profile, rows))  # type: ignore[arg-type]


def test_a_customer_with_many_categories_contributes_only_the_bound():
    basket = [("z", "2024-06-01 10:00", c) for c in MANY]
    extra = [("z", f"2024-0{m}-03 12:00", c) for m in (7, 8) for c in ("misc/c48", "misc/c49")]
    view = _heavy_view(basket + extra)
    ctx = QueryContext(
        vocabulary=MANY_VOCAB, pair_level="category", max_categories_per_customer=5
    )  # 10 pairs by default
    shares = build_query("category_shares", ctx)
    part = shares.counts(view) - shares.counts(StoreView("mall", _without(view.prepared, "z")))
    # c48 and c49 bought most (3 lines), then ties by name: c00, c01, c02
    assert _nonzero(shares, part) == {
        ("__customers__",): 1,
        **{(c,): 1 for c in ("misc/c00", "misc/c01", "misc/c02", "misc/c48", "misc/c49")},
    }
    assert np.linalg.norm(part) == pytest.approx(shares.l2_sensitivity)
    pairs = build_query("co_purchase", ctx)
    part = pairs.counts(view) - pairs.counts(StoreView("mall", _without(view.prepared, "z")))
    kept = {k for k in _nonzero(pairs, part) if k[0] == "pair"}
    # (c48, c49) shares 3 baskets; the other 1,224 pairs tie at one: the first 9 by name
    assert kept == {("pair", "misc/c48", "misc/c49")} | {
        ("pair", "misc/c00", f"misc/c{i:02d}") for i in range(1, 10)
    }
    assert part.sum() == 1 + 5 + 10
    assert np.linalg.norm(part) == pytest.approx(pairs.l2_sensitivity)


def test_a_long_purchase_sequence_contributes_only_the_bound():
    days = pd.date_range("2024-03-01 09:00", periods=20, freq="D")
    view = _heavy_view([("z", str(day), MANY[i]) for i, day in enumerate(days)])
    ctx = QueryContext(vocabulary=MANY_VOCAB, pair_level="category", max_pairs_per_customer=10)
    query = build_query("purchase_sequence", ctx)
    part = query.counts(view) - query.counts(StoreView("mall", _without(view.prepared, "z")))
    kept = {k for k in _nonzero(query, part) if k[0] == "pair"}
    # 190 ordered pairs; the closest (one day apart) first, ties by name
    assert kept == {("pair", MANY[i], MANY[i + 1]) for i in range(10)}
    assert np.linalg.norm(part) == pytest.approx(query.l2_sensitivity)


def test_cohort_contribution_is_bounded_by_the_tracked_months():
    months = [("z", f"2024-{m:02d}-15 10:00", "misc/c01") for m in range(1, 13)]
    view = _heavy_view(months)
    query = build_query("cohort_retention", QueryContext(retention_months=3))
    part = query.counts(view) - query.counts(StoreView("mall", _without(view.prepared, "z")))
    assert _nonzero(query, part) == {("T-12", str(m)): 1 for m in range(4)}
    assert np.linalg.norm(part) == pytest.approx(query.l2_sensitivity)


# -- tables --------------------------------------------------------------------------------


def test_funnel_and_format_tables_share_released_cells_only():
    q = build_query("lifecycle_funnel", CONTEXT)
    table = q.table(np.array([10.0, -3.0, 30.0, 5.0, 60.0]), np.array([1, 1, 1, 0, 1], bool))
    assert list(table.columns) == ["stage", "count", "suppressed", "share"]
    np.testing.assert_allclose(table["count"], [10, 0, 30, np.nan, 60])
    np.testing.assert_allclose(table["share"], [0.1, 0.0, 0.3, np.nan, 0.6])
    assert table["suppressed"].tolist() == [False, False, False, True, False]

    q = build_query("lifecycle_by_format", QueryContext(formats=("mall", "other")))
    totals = np.array([1.0, 2, 3, 4, 10, 5, 5, 7, 0, 0])
    released = np.array([1, 1, 1, 1, 1, 1, 1, 0, 0, 0], bool)
    table = q.table(totals, released)
    np.testing.assert_allclose(
        table["share"], [0.05, 0.1, 0.15, 0.2, 0.5, 0.5, 0.5, np.nan, np.nan, np.nan]
    )


def test_churn_table_has_one_row_per_segment_with_rates():
    q = build_query("churn_by_segment", CONTEXT)
    n = len(VALUE_TIERS) * len(LIFECYCLE_STAGES)
    totals = np.zeros(2 * n)
    totals[:4] = [100, 50, 0, 10]
    totals[n : n + 4] = [30, 20, 0, 12]
    released = np.ones(2 * n, bool)
    released[n + 1] = False
    table = q.table(totals, released)
    assert len(table) == n and table["segment"].iloc[0] == "high/new"
    assert table[["value_tier", "stage"]].iloc[3].tolist() == ["high", "declining"]
    np.testing.assert_allclose(table["rate"].iloc[:4], [0.3, np.nan, np.nan, 1.0])
    assert np.isnan(table["churned"].iloc[1]) and table["suppressed"].tolist()[:3] == [
        False,
        True,
        False,
    ]


def test_category_and_consent_shares():
    q = build_query("category_shares", CONTEXT)
    table = q.table(np.array([200.0, 50, 30, 0, -4, 250]), np.array([1, 1, 0, 1, 1, 1], bool))
    np.testing.assert_allclose(table["share"], [np.nan, 0.25, np.nan, 0.0, 0.0, 1.0])  # capped
    hidden = q.table(np.array([200.0, 50, 30, 0, 4, 25]), np.array([0, 1, 1, 1, 1, 1], bool))
    assert hidden["share"].isna().all() and hidden["count"].iloc[1] == 50
    q = build_query("consent_coverage", CONTEXT)
    table = q.table(np.array([100.0, 80, 40, 20]), np.array([1, 1, 0, 1], bool))
    np.testing.assert_allclose(table["share"], [np.nan, 0.8, np.nan, 0.2])


def test_pair_tables_support_confidence_lift_and_release_rule():
    q = build_query("co_purchase", CONTEXT)
    totals = np.array([100.0, 40, 20, 50, 10, 20, 5])
    released = np.array([1, 1, 1, 0, 1, 1, 1], bool)  # single "food" suppressed
    table = q.table(totals, released)
    pair = table.iloc[4]  # baby + beauty
    assert (pair["antecedent"], pair["consequent"]) == ("baby", "beauty")
    assert pair["support"] == pytest.approx(0.1)
    assert pair["confidence_ab"] == pytest.approx(0.25)
    assert pair["confidence_ba"] == pytest.approx(0.5)
    assert pair["lift"] == pytest.approx(0.1 / (0.4 * 0.2))
    # pairs with food are withheld although their own cells were released
    assert table["suppressed"].tolist() == [False, False, False, True, False, True, True]
    assert table.iloc[5:][["count", "support", "lift", "confidence_ab"]].isna().all().all()
    assert table["support"].iloc[1] == pytest.approx(0.4)  # a single's share of customers

    q = build_query("purchase_sequence", CONTEXT)
    totals = np.array([100.0, 40, 20, 50, 8, 10, 4, 5, 0, 0])
    table = q.table(totals, np.ones(10, bool))
    row = table.iloc[5]  # baby → food
    assert (row["antecedent"], row["consequent"]) == ("baby", "food")
    assert row["confidence"] == pytest.approx(10 / 40)
    assert row["lift"] == pytest.approx(0.1 / (0.4 * 0.5))
    assert table.iloc[7]["confidence"] == pytest.approx(5 / 20)  # beauty → food


def test_retention_table():
    q = build_query("cohort_retention", QueryContext(cohort_months=2, retention_months=2))
    totals = np.array([50.0, 20, 30, 40, 10, 5])
    released = np.array([1, 1, 0, 0, 1, 1], bool)
    table = q.table(totals, released)
    np.testing.assert_allclose(table["retention"], [1.0, 0.4, np.nan, np.nan, np.nan, np.nan])
    assert table["count"].isna().tolist() == [False, False, True, True, False, False]


def test_table_refuses_wrong_shapes():
    q = build_query("lifecycle_funnel", CONTEXT)
    with pytest.raises(ValueError, match="5 totals"):
        q.table(np.zeros(4), np.ones(4, bool))


# -- errors --------------------------------------------------------------------------------


def test_errors():
    with pytest.raises(ConfigError) as info:
        build_query("revenue", CONTEXT)
    assert all(name in str(info.value) for name in QUERY_NAMES)
    for name in ("category_shares", "co_purchase", "purchase_sequence"):
        with pytest.raises(ConfigError, match="vocabulary"):
            build_query(name, QueryContext())
    with pytest.raises(DataError, match="no churn labels"):
        build_query("churn_by_segment", CONTEXT).counts(_view(labels=False))
    with pytest.raises(DataError, match="consent coverage"):
        build_query("consent_coverage", CONTEXT).counts(StoreView("mall", _prepared()))  # type: ignore[arg-type]
    big = CategoryVocabulary.from_categories(f"misc/c{i:03d}" for i in range(201))
    with pytest.raises(ConfigError, match="at most 200"):
        build_query("co_purchase", QueryContext(vocabulary=big, pair_level="category"))
    assert len(build_query("co_purchase", QueryContext(vocabulary=big)).cells) == 1 + 1
    for bad in ({"pair_level": "sku"}, {"cohort_months": 0}, {"max_pairs_per_customer": 0}):
        with pytest.raises(ConfigError):
            QueryContext(**bad)


# -- a real prepared store -----------------------------------------------------------------


@pytest.fixture(scope="module")
def real_stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[CategoryVocabulary, list]:
    out = tmp_path_factory.mktemp("analytics") / "chain"
    generate_chain(out, ChainParams(stores=2, customers_per_store=150))
    vocab = CategoryVocabulary.from_categories(chain_categories(out))
    views = []
    for root in sorted(p for p in Path(out).iterdir() if (p / "store.json").is_file()):
        prepared = prepare_store(root, PreparationRequest(purpose="analytics"), vocabulary=vocab)
        coverage = consent_coverage_counts(load_store(root), prepared.features.cutoff)
        fmt = root.name.split("_")[1]
        views.append(StoreView(fmt, prepared, coverage))
    return vocab, views


def test_every_query_on_a_real_prepared_store(real_stores):
    vocab, views = real_stores
    contexts = (
        QueryContext(vocabulary=vocab),
        QueryContext(vocabulary=vocab, pair_level="category", max_pairs_per_customer=3),
    )
    for view in views:
        prepared = view.prepared
        n = len(prepared.features.customer_ids)
        tx = prepared.transactions
        busiest = tx.loc[tx["timestamp"] < prepared.features.cutoff, "customer_id"]
        sample = [*busiest.value_counts().index[:6], *prepared.features.customer_ids[:: n // 4]]
        for context in contexts:
            for name in QUERY_NAMES:
                query = build_query(name, context)
                counts = query.counts(view)
                assert counts.dtype == np.int64 and counts.shape == (len(query.cells),)
                assert (counts >= 0).all()
                if name == "lifecycle_funnel":
                    assert counts.sum() == n
                if name == "consent_coverage":
                    continue  # counted from the raw ledger, tested above
                for customer in sample:
                    fewer = StoreView(view.store_format, _without(prepared, customer))  # type: ignore[arg-type]
                    part = counts - query.counts(fewer)
                    assert (part >= 0).all()
                    assert np.linalg.norm(part) <= query.l2_sensitivity + 1e-9, (name, context)
                table = query.table(counts.astype(float), np.ones(len(counts), bool))
                assert len(table) > 0
