"""The synthetic chain generator: API, determinism, layout, contract and validation."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedcrm.data.contract import TABLES
from fedcrm.data.layout import discover_stores
from fedcrm.data.store import pandas_dtype
from fedcrm.data.validation import check_store
from fedcrm.errors import ConfigError, OutputExistsError
from fedcrm.synthetic.chain import ChainParams, ChainSummary, generate_chain

PARAMS = ChainParams(
    stores=4, customers_per_store=150, seed=11, start="2024-01-01", end="2025-07-01"
)


def _tables(root: Path) -> dict[str, pd.DataFrame]:
    """Every table of every store (and the ground truth), keyed by relative path."""
    return {str(p.relative_to(root)): pd.read_parquet(p) for p in sorted(root.rglob("*.parquet"))}


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ChainSummary]:
    out = tmp_path_factory.mktemp("synthetic") / "chain"
    return out, generate_chain(out, PARAMS)


def test_same_seed_gives_identical_tables(chain, tmp_path):
    root, _ = chain
    again = generate_chain(tmp_path / "again", PARAMS)
    first, second = _tables(root), _tables(again.path)
    assert first.keys() == second.keys() and len(first) > 8
    for name, frame in first.items():
        pd.testing.assert_frame_equal(frame, second[name], check_exact=True, obj=name)
    assert (root / "chain.json").read_text() == (again.path / "chain.json").read_text()


def test_different_seed_gives_different_tables(chain, tmp_path):
    root, _ = chain
    other = generate_chain(tmp_path / "other", replace(PARAMS, seed=12))
    ours, theirs = _tables(root), _tables(other.path)
    assert ours.keys() == theirs.keys()
    for name in ("customers", "transactions", "consents"):
        key = f"s00_flagship_shanghai/{name}.parquet"
        assert not ours[key].equals(theirs[key]), name
    names = "s00_flagship_shanghai/customers.parquet"
    assert (ours[names]["name"] != theirs[names]["name"]).mean() > 0.5


def test_layout_stores_manifest_and_ground_truth_apart(chain):
    root, summary = chain
    stores = discover_stores(root)
    assert [p.name for p in stores] == [s.store_id for s in summary.stores]
    assert [s.format for s in summary.stores] == ["flagship", "mall", "community", "livestream"]
    assert (root / "_ground_truth" / "customers.parquet").is_file()
    assert (root / "_ground_truth" / "categories.parquet").is_file()
    manifest = json.loads((root / "chain.json").read_text(encoding="utf-8"))
    assert manifest["params"]["seed"] == 11 and manifest["generator_version"]
    assert [s["transactions"] for s in manifest["stores"]] == [
        s.transactions for s in summary.stores
    ]
    store = json.loads((stores[0] / "store.json").read_text(encoding="utf-8"))
    assert store["store_id"] == stores[0].name and store["source"] == "fedcrm generate"
    assert store["format"] == "flagship" and store["name"]
    assert summary.total_rows == sum(s.rows for s in summary.stores)
    # Format size factors: flagship 1.5, mall 1.0, community 0.7, live-stream 0.8 of the mean.
    assert [s.customers for s in summary.stores] == [225, 150, 105, 120]


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_chain_validates_with_zero_findings_and_contract_dtypes(chain, tmp_path, fmt):
    root = (
        chain[0]
        if fmt == "parquet"
        else generate_chain(
            tmp_path / "csv", ChainParams(stores=2, customers_per_store=60, seed=3, fmt="csv")
        ).path
    )
    for store in discover_stores(root):
        check = check_store(store)
        assert check.findings == (), [f.describe() for f in check.findings[:5]]
        data = check.require_data()
        for name, frame in data.tables().items():
            contract = TABLES[name]
            assert (
                set(contract.required_columns) <= set(frame.columns) <= set(contract.column_names)
            )
            for column in frame.columns:
                expected = pandas_dtype(contract.column(column).kind)
                assert frame[column].dtype == expected, (name, column, frame[column].dtype)
        ids = data.customers["customer_id"]
        assert ids.str.fullmatch(r"0\d{9}").all()  # text ids with leading zeros survive
        assert ids.is_unique and ids.is_monotonic_increasing  # row order reveals nothing


def test_written_dtypes_match_the_contract_before_reading_back(chain):
    root, _ = chain
    frame = pd.read_parquet(root / "s01_mall_beijing" / "transactions.parquet")
    assert frame["timestamp"].dtype == "datetime64[ns]"
    assert frame["quantity"].dtype == "int64" and frame["amount"].dtype == "float64"
    consents = pd.read_parquet(root / "s01_mall_beijing" / "consents.parquet")
    assert consents["granted"].dtype == "bool"


def test_integrity_no_future_rows_positive_amounts_unique_keys(chain):
    root, _ = chain
    end = pd.Timestamp(PARAMS.end)
    for store in discover_stores(root):
        data = check_store(store).require_data()
        for frame in data.tables().values():
            for column in ("timestamp", "joined_at"):
                if column in frame:
                    assert (frame[column] < end).all()
        tx = data.transactions
        assert (tx["timestamp"] >= pd.Timestamp(PARAMS.start)).all()
        assert (tx["amount"] > 0).all() and (tx["quantity"] >= 1).all()
        assert (tx["discount"] >= 0).all() and tx["transaction_id"].is_unique
        assert (tx["store_id"] == store.name).all()
        known = set(data.customers["customer_id"])
        for name in ("transactions", "interactions", "consents"):
            assert set(data.tables()[name]["customer_id"]) <= known


def test_progress_is_reported_per_store(tmp_path):
    calls: list[tuple[str, int, int]] = []
    generate_chain(
        tmp_path / "c",
        ChainParams(stores=3, customers_per_store=20),
        progress=lambda *a: calls.append(a),
    )
    assert calls[0] == ("stores", 0, 3) and calls[-1] == ("stores", 3, 3)


def test_existing_output_is_refused_and_kept(tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError):
        generate_chain(out, ChainParams(stores=1, customers_per_store=10))
    assert (out / "keep.txt").read_text() == "mine"
    # --force replaces only what fedcrm wrote: a foreign directory is never deleted ...
    with pytest.raises(OutputExistsError, match="not written by fedcrm"):
        generate_chain(out, ChainParams(stores=1, customers_per_store=10), overwrite=True)
    assert (out / "keep.txt").read_text() == "mine"
    # ... while an earlier chain is.
    chain = tmp_path / "chain"
    generate_chain(chain, ChainParams(stores=1, customers_per_store=10))
    generate_chain(chain, ChainParams(stores=1, customers_per_store=12), overwrite=True)
    assert (chain / "chain.json").is_file() and '"customers_per_store": 12' in (
        chain / "chain.json"
    ).read_text()


def test_failure_half_way_leaves_nothing(tmp_path):
    def fail(stage: str, done: int, total: int) -> None:
        if done == 2:
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        generate_chain(
            tmp_path / "out", ChainParams(stores=3, customers_per_store=20), progress=fail
        )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"stores": 0}, "stores must be a whole number"),
        ({"stores": True}, "stores must be a whole number"),
        ({"customers_per_store": 2.5}, "customers_per_store must be a whole number"),
        ({"stores": 500, "customers_per_store": 100_000}, "at most 5,000,000"),
        ({"seed": -1}, "seed must be a whole number"),
        ({"start": "yesterday"}, "start must be a date"),
        ({"start": "2025-01-01", "end": "2024-01-01"}, "at least 7 days after start"),
        ({"start": "1980-01-01"}, "history must lie within"),
        ({"fmt": "xlsx"}, "--format must be one of parquet, csv"),
    ],
)
def test_bad_params_raise_config_error_naming_the_value(changes, message):
    with pytest.raises(ConfigError, match=message):
        ChainParams(**changes)


def test_params_are_frozen_and_dates_normalised():
    params = ChainParams(start="20240101", end="2024-06-30")
    assert params.start == "2024-01-01"
    with pytest.raises(AttributeError):
        params.stores = 3  # type: ignore[misc]
    assert np.datetime64(params.end) > np.datetime64(params.start)
