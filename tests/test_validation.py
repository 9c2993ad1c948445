"""The validator reports every contract breach with file, row and field."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from fedcrm.data.findings import Severity
from fedcrm.data.store import load_store
from fedcrm.data.validation import check_store
from fedcrm.errors import DataValidationError

NOW = datetime(2026, 1, 1)


def _rewrite_csv(path: Path, edit: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    edit(frame).to_csv(path, index=False)


def _where(check, file: str) -> set[tuple[int | None, str | None]]:
    return {(f.row, f.field) for f in check.errors if f.file == file}


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_valid_store_loads_with_contract_dtypes(make_store, fmt):
    data = load_store(make_store(fmt=fmt), now=NOW)
    assert data.store_id == "s1"
    assert list(data.customers["customer_id"]) == ["0001", "0002", "0003"]  # leading zeros kept
    assert data.transactions["timestamp"].dtype == "datetime64[ns]"
    assert data.transactions["amount"].dtype == "float64"
    assert data.transactions["quantity"].dtype == "int64"
    assert data.consents["granted"].dtype == "bool"
    assert len(data.interactions) == 2


def test_seeded_defects_each_reported_with_file_row_and_field(make_store):
    root = make_store()

    def break_transactions(f: pd.DataFrame) -> pd.DataFrame:
        f.loc[1, "amount"] = "-4.5"  # row 2: negative
        f.loc[2, "amount"] = "2500000"  # row 3: absurd
        f.loc[3, "quantity"] = "1.5"  # row 4: not whole
        f.loc[4, "customer_id"] = "0999"  # row 5: orphan
        f.loc[4, "timestamp"] = "2031-01-01 10:00:00"  # row 5: future
        dup = f.iloc[[0]].copy()
        return pd.concat([f, dup], ignore_index=True)  # row 6: duplicate key of row 1

    _rewrite_csv(root / "transactions.csv", break_transactions)

    def break_consents(f: pd.DataFrame) -> pd.DataFrame:
        f.loc[1, "purpose"] = "profiling_everything"  # row 2: unknown purpose
        f.loc[2, "granted"] = "maybe"  # row 3: not a boolean
        return f

    _rewrite_csv(root / "consents.csv", break_consents)

    def break_customers(f: pd.DataFrame) -> pd.DataFrame:
        f.loc[2, "joined_at"] = "not a date"  # row 3
        f.loc[1, "birth_date"] = "2090-01-01"  # row 2: future birth
        return f

    _rewrite_csv(root / "customers.csv", break_customers)

    check = check_store(root, now=NOW)
    assert not check.ok
    assert _where(check, "transactions.csv") == {
        (2, "amount"),
        (3, "amount"),
        (4, "quantity"),
        (5, "customer_id"),
        (5, "timestamp"),
        (6, "transaction_id"),
    }
    assert _where(check, "consents.csv") == {(2, "purpose"), (3, "granted")}
    assert _where(check, "customers.csv") == {(3, "joined_at"), (2, "birth_date")}
    dup = next(f for f in check.errors if f.field == "transaction_id")
    assert "first seen at row 1" in dup.message
    with pytest.raises(DataValidationError) as raised:
        check.require_data()
    assert len(raised.value.findings) == len(check.findings)


def test_findings_never_quote_identifying_values(make_store):
    root = make_store()
    _rewrite_csv(root / "transactions.csv", lambda f: f.assign(customer_id=["CANARY-77"] * len(f)))
    check = check_store(root, now=NOW)
    assert {f.field for f in check.errors} == {"customer_id"}
    assert all("CANARY-77" not in f.describe() for f in check.findings)


def test_non_utf8_file_names_the_row(make_store):
    root = make_store()
    path = root / "customers.csv"
    text = path.read_text(encoding="utf-8")
    path.write_bytes(text.encode("gbk"))  # Chinese names are not valid UTF-8 in GBK
    check = check_store(root, now=NOW)
    (finding,) = [f for f in check.errors if f.file == "customers.csv"]
    assert finding.row == 1 and "UTF-8" in finding.message


def test_bom_is_accepted(make_store):
    root = make_store()
    path = root / "transactions.csv"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert check_store(root, now=NOW).ok


def test_missing_table_and_column(make_store):
    root = make_store()
    (root / "consents.csv").unlink()
    _rewrite_csv(root / "transactions.csv", lambda f: f.drop(columns=["amount"]))
    check = check_store(root, now=NOW)
    messages = {(f.file, f.field, f.message) for f in check.errors}
    assert ("consents.parquet|csv", None, "missing required table 'consents'") in messages
    assert ("transactions.csv", "amount", "required column is missing") in messages


def test_table_in_two_formats_is_ambiguous(make_store):
    root = make_store()
    pd.read_csv(root / "consents.csv").to_parquet(root / "consents.parquet")
    check = check_store(root, now=NOW)
    assert any("exists twice" in f.message for f in check.errors)


def test_unknown_column_is_a_warning_and_kept_for_the_boundary_to_refuse(make_store):
    root = make_store()
    _rewrite_csv(root / "customers.csv", lambda f: f.assign(wechat_openid="x"))
    check = check_store(root, now=NOW)
    assert check.ok
    (warning,) = check.warnings
    assert warning.severity is Severity.WARNING and warning.field == "wechat_openid"
    assert "wechat_openid" in check.require_data().customers.columns


def test_contradictory_consent_events(make_store):
    root = make_store()

    def contradict(f: pd.DataFrame) -> pd.DataFrame:
        row = f.iloc[[0]].copy()
        row["granted"] = "False"
        return pd.concat([f, row], ignore_index=True)

    _rewrite_csv(root / "consents.csv", contradict)
    check = check_store(root, now=NOW)
    assert _where(check, "consents.csv") == {(1, "granted"), (5, "granted")}


def test_unknown_interaction_kind(make_store):
    root = make_store()
    _rewrite_csv(root / "interactions.csv", lambda f: f.assign(kind=["review", "telepathy"]))
    assert _where(check_store(root, now=NOW), "interactions.csv") == {(2, "kind")}


def test_many_errors_are_capped_with_a_count(make_store):
    root = make_store()

    def many(f: pd.DataFrame) -> pd.DataFrame:
        rows = pd.concat([f.iloc[[0]]] * 60, ignore_index=True)
        rows["transaction_id"] = [f"x{i}" for i in range(60)]
        rows["amount"] = "-1"
        return rows

    _rewrite_csv(root / "transactions.csv", many)
    errors = [f for f in check_store(root, now=NOW).errors if f.field == "amount"]
    assert len(errors) == 21
    assert errors[-1].row is None and errors[-1].message.startswith("40 more rows")


def test_numeric_ids_beyond_float_precision_stay_exact(make_store, tmp_path):
    big = [9007199254740992, 9007199254740993]
    root = make_store()
    for name in ("customers", "transactions", "consents", "interactions"):
        (root / f"{name}.csv").unlink()
    pd.DataFrame(
        {
            "customer_id": pd.Series(big, dtype="int64"),
            "joined_at": pd.to_datetime(["2024-01-01"] * 2),
        }
    ).to_parquet(root / "customers.parquet")
    pd.DataFrame(
        {
            "transaction_id": ["t1", "t2"],
            "customer_id": pd.Series(big, dtype="int64"),
            "timestamp": pd.to_datetime(["2024-02-01"] * 2),
            "amount": [1.0, 2.0],
            "quantity": [1, 1],
            "store_id": ["s1", "s1"],
        }
    ).to_parquet(root / "transactions.parquet")
    pd.DataFrame(
        {
            "customer_id": pd.Series(big, dtype="int64"),
            "purpose": ["analytics"] * 2,
            "granted": [True, True],
            "timestamp": pd.to_datetime(["2024-01-01"] * 2),
            "source": ["pos"] * 2,
            "policy_version": ["v1"] * 2,
        }
    ).to_parquet(root / "consents.parquet")
    data = load_store(root, now=NOW)
    assert list(data.customers["customer_id"]) == [str(b) for b in big]


def test_utc_offsets_keep_the_store_wall_clock(make_store):
    root = make_store()
    _rewrite_csv(
        root / "transactions.csv",
        lambda f: f.assign(timestamp=["2024-05-01T07:00:00+08:00", *f["timestamp"][1:]]),
    )
    data = load_store(root, now=NOW)
    assert data.transactions["timestamp"].iloc[0] == pd.Timestamp("2024-05-01 07:00")
