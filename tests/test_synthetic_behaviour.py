"""The synthetic chain behaves like retail: non-IID stores, BTYD, seasons, baskets, consent."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedcrm.data.contract import PURPOSES
from fedcrm.data.layout import discover_stores
from fedcrm.data.store import load_store
from fedcrm.synthetic.chain import ChainParams, generate_chain

PARAMS = ChainParams(stores=4, customers_per_store=400, seed=21)
START, END = pd.Timestamp(PARAMS.start), pd.Timestamp(PARAMS.end)


@dataclass(frozen=True)
class Chain:
    root: Path
    customers: pd.DataFrame
    transactions: pd.DataFrame
    interactions: pd.DataFrame
    consents: pd.DataFrame
    truth: pd.DataFrame
    calendar: pd.DataFrame


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    root = tmp_path_factory.mktemp("behaviour") / "chain"
    generate_chain(root, PARAMS)
    stores = {p.name: load_store(p) for p in discover_stores(root)}

    def table(name: str) -> pd.DataFrame:
        return pd.concat(
            [d.tables()[name].assign(store=s) for s, d in stores.items()], ignore_index=True
        )

    truth = pd.read_parquet(root / "_ground_truth" / "customers.parquet")
    return Chain(
        root, table("customers"), table("transactions"), table("interactions"),
        table("consents"), truth, pd.read_parquet(root / "_ground_truth" / "calendar.parquet"),
    )  # fmt: skip


def _with_truth(frame: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    return frame.merge(
        truth, left_on=["store", "customer_id"], right_on=["store_id", "customer_id"]
    )


def test_store_formats_differ_in_category_and_channel_mix(chain):
    tx = chain.transactions.assign(
        fmt=lambda f: f["store"].str.split("_").str[1],
        top=lambda f: f["category"].str.split("/").str[0],
    )
    fresh = (tx["top"] == "fresh").groupby(tx["fmt"]).mean()
    assert fresh["community"] > 0.4 and fresh["community"] > 4 * fresh["livestream"]
    apparel = (tx["top"] == "apparel").groupby(tx["fmt"]).mean()
    assert apparel["mall"] > 2 * apparel["community"]
    channels = pd.crosstab(tx["fmt"], tx["channel"], normalize="index")
    assert channels.loc["livestream", ["live_stream", "partner"]].sum() > 0.5
    assert channels.loc["livestream", "pos"] == 0 and channels.loc["community", "live_stream"] == 0
    assert channels.loc["community", "pos"] > 0.6


def test_catalog_has_a_two_level_hierarchy_of_thirty_plus_leaves(chain):
    categories = chain.transactions["category"]
    assert categories.str.fullmatch(r"[a-z]+/[a-z_]+").all()
    assert categories.nunique() >= 30 and categories.str.split("/").str[0].nunique() >= 8
    truth = pd.read_parquet(chain.root / "_ground_truth" / "categories.parquet")
    assert set(categories) <= set(truth["category"])
    prices = chain.transactions.assign(unit=lambda f: (f["amount"] + f["discount"]) / f["quantity"])
    median = prices.groupby("category")["unit"].median()
    assert median["electronics/computers"] > 20 * median["fresh/vegetables"]


def test_buy_till_you_die_heterogeneity_joins_and_dropouts(chain):
    truth = chain.truth
    rate = truth["purchase_rate"]
    assert rate.std() / rate.mean() > 0.5  # Gamma-heterogeneous visit rates
    assert 0.1 < (truth["joined_at"] < START).mean() < 0.5  # some joined before the window
    assert truth["joined_at"].max() > END - pd.Timedelta(days=60)
    churned = truth["dropout_at"].notna()
    assert 0.2 < churned.mean() < 0.7 and truth.loc[churned, "alive_at_end"].eq(False).all()
    assert (truth.loc[churned, "dropout_at"] < END).all()


def test_churners_stop_buying_at_dropout_and_slow_down_before(chain):
    tx = _with_truth(chain.transactions, chain.truth)
    churned = tx[tx["dropout_at"].notna()]
    assert len(churned) > 1000
    assert (churned["timestamp"] < churned["dropout_at"]).all()
    assert (tx["timestamp"] >= tx["joined_at"]).all()
    # Churners with six months of history before dropout: lines per day by days left.
    history_from = churned["joined_at"].clip(lower=START) + pd.Timedelta(days=180)
    eligible = churned[churned["dropout_at"] > history_from]
    days_left = (eligible["dropout_at"] - eligible["timestamp"]).dt.days
    last_month = (days_left < 30).sum() / 30
    earlier = days_left.between(90, 179).sum() / 90
    assert last_month < 0.8 * earlier  # activity declines before dropout


def test_promotions_discounts_and_discount_sensitive_customers(chain):
    promo_days = set(chain.calendar.loc[chain.calendar["promo_depth"] > 0, "date"])
    tx = _with_truth(chain.transactions, chain.truth)
    on_promo = tx["timestamp"].dt.normalize().isin(promo_days)
    assert (tx.loc[on_promo, "discount"] > 0).all()
    assert (tx.loc[~on_promo, "discount"] > 0).mean() < 0.1
    share = on_promo.groupby(tx["discount_sensitive"]).mean()
    assert share[True] > share[False] + 0.2
    daily = chain.transactions.groupby(chain.transactions["timestamp"].dt.normalize()).size()
    assert daily[pd.Timestamp("2024-11-11")] > 4 * daily.median()
    holiday = daily[pd.Timestamp("2024-02-10") : pd.Timestamp("2024-02-15")]  # Spring Festival
    assert holiday.mean() < 0.7 * daily.median()


def test_new_parents_buy_formula_first_and_diapers_later(chain):
    tx = chain.transactions
    key = tx["store"] + "|" + tx["customer_id"]
    formula = tx[tx["category"] == "baby/infant_formula"].groupby(key)["timestamp"].min()
    diapers = (
        tx[tx["category"] == "baby/diapers"].assign(key=key).join(formula.rename("first"), on="key")
    )
    later = diapers[diapers["timestamp"] > diapers["first"] + pd.Timedelta(days=90)][
        "key"
    ].nunique()
    without = set(key) - set(formula.index)
    baseline = len(set(diapers["key"]) & without) / len(without)
    assert len(formula) > 50
    assert later / len(formula) > 2.5 * baseline


def test_baskets_follow_the_co_purchase_matrix(chain):
    tx = chain.transactions
    # A basket is one customer's lines at one store and time (one receipt).
    basket = tx.groupby(["store", "customer_id", "timestamp"], sort=False).ngroup()
    baskets = {c: set(basket[tx["category"] == c]) for c in tx["category"].unique()}
    for anchor, partner in (
        ("baby/infant_formula", "baby/diapers"),
        ("pet/cat_food", "pet/cat_litter"),
    ):
        given_anchor = len(baskets[anchor] & baskets[partner]) / len(baskets[anchor])
        overall = len(baskets[partner]) / (basket.max() + 1)
        assert given_anchor > 3 * overall, (anchor, partner, given_anchor, overall)
    assert 1.8 < len(tx) / (basket.max() + 1) < 4


def test_interactions_follow_behaviour(chain):
    it = _with_truth(chain.interactions, chain.truth)
    reviews = it[it["kind"] == "review"]
    assert reviews["score"].between(1, 5).all() and reviews["score"].nunique() == 5
    assert np.corrcoef(reviews["score"], reviews["satisfaction"])[0, 1] > 0.3
    complaints = it[it["kind"] == "complaint"]
    near = complaints["dropout_at"].notna() & (
        complaints["timestamp"] > complaints["dropout_at"] - pd.Timedelta(days=90)
    )
    churners = chain.truth["dropout_at"].notna() & (
        chain.truth["dropout_at"] > START + pd.Timedelta(days=90)
    )
    near_rate = near.sum() / (churners.sum() * 90)
    base_rate = (~near).sum() / (len(chain.truth) * (END - START).days)
    assert near_rate > 3 * base_rate
    assert set(it["kind"]) == {"view", "cart", "share", "review", "complaint", "service"}


def test_consent_ledger_is_realistic(chain):
    ledger = chain.consents.merge(chain.customers[["store", "customer_id", "joined_at"]])
    assert set(ledger["purpose"]) == set(PURPOSES)
    assert (ledger["timestamp"] >= ledger["joined_at"]).all() and (ledger["timestamp"] < END).all()
    ordered = ledger.sort_values(["store", "customer_id", "purpose", "timestamp"], kind="stable")
    previous = ordered.groupby(["store", "customer_id", "purpose"])["granted"].shift()
    revoked, regranted = (
        (previous.eq(True) & ~ordered["granted"]),
        (previous.eq(False) & ordered["granted"]),
    )
    assert revoked.sum() > 20 and regranted.sum() > 5
    first = ordered.groupby(["store", "customer_id", "purpose"])["granted"].first()
    rates = first.groupby(level="purpose").mean()
    for purpose, expected in {"analytics": 0.9, "model_training": 0.8, "marketing": 0.6}.items():
        assert abs(rates[purpose] - expected) < 0.05, (purpose, rates[purpose])
    never = 1 - ledger.groupby(["store", "customer_id"]).ngroups / len(chain.customers)
    assert 0.0 < never < 0.05
    training = ledger[ledger["purpose"] == "model_training"]
    assert (
        training["timestamp"] >= pd.Timestamp("2023-03-01")
    ).all()  # first asked in notice 2023.1
    assert ledger["policy_version"].nunique() >= 3
    assert not ledger.duplicated(["store", "customer_id", "purpose", "timestamp"]).any()
