"""`fedcrm import` turns real-world exports into store directories that pass the contract."""

from __future__ import annotations

import hashlib
import json
import random
import warnings
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from fedcrm.data.importing import (
    ImportRequest,
    ImportSummary,
    import_transactions,
    parse_mapping,
)
from fedcrm.data.layout import discover_stores
from fedcrm.data.store import StoreData, load_store
from fedcrm.data.store_assignment import bucket_names, hash_buckets, store_slugs
from fedcrm.errors import (
    ConfigError,
    DataValidationError,
    ImportMappingError,
    OutputExistsError,
)

NOW = datetime(2026, 1, 1)
BASIC_MAP = "customer_id=CustomerID,timestamp=InvoiceDate,amount=Total"


def _write(path: Path, text: str, encoding: str = "utf-8", bom: bool = False) -> Path:
    data = text.encode(encoding)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    return path


def _run(
    tmp_path: Path,
    source: Path,
    mapping: str = BASIC_MAP,
    *,
    out: str = "out",
    consent: Path | str = "all-granted",
    **options: object,
) -> ImportSummary:
    request = ImportRequest(
        source=source,
        mapping=parse_mapping(mapping),
        date_format=options.pop("date_format", None),  # type: ignore[arg-type]
        store_column=options.pop("store_column", None),  # type: ignore[arg-type]
        stores=options.pop("stores", None),  # type: ignore[arg-type]
        consent=consent if consent == "all-granted" else Path(consent),  # type: ignore[arg-type]
        out=tmp_path / out,
        now=NOW,
        **options,  # type: ignore[arg-type]
    )
    return import_transactions(request)


def _load_all(out: Path) -> dict[str, StoreData]:
    return {root.name: load_store(root, now=NOW) for root in discover_stores(out)}


def _error_places(exc: DataValidationError) -> set[tuple[str, int | None, str | None]]:
    return {(f.file, f.row, f.field) for f in exc.findings}


MESSY = (
    " CustomerID , InvoiceDate ,Total , Note\n"
    '"0012","2024-03-05 14:22","¥1,234.50","gift, wrapped"\n'
    ' 0012 , 2024-03-06T10:00:00 ,$12.00,"two\nlines"\n'
    '"007",2024-04-01, 3 ,"said ""hi"""\n'
    '00042,2024-04-02 08:00:00,"1,000",\n'
)


def test_messy_csv_imports_with_contract_dtypes_and_leading_zeros(tmp_path):
    source = _write(tmp_path / "messy.csv", MESSY, bom=True)
    summary = _run(tmp_path, source)

    assert summary.rows_read == 4 and summary.rows_imported == 4
    stores = _load_all(tmp_path / "out")
    assert list(stores) == ["store_00"]
    data = stores["store_00"]
    tx = data.transactions
    assert list(tx["customer_id"]) == ["0012", "0012", "007", "00042"]  # zeros and text kept
    assert list(tx["amount"]) == [1234.5, 12.0, 3.0, 1000.0]
    assert list(tx["quantity"]) == [1, 1, 1, 1]
    assert list(tx["transaction_id"]) == ["row-1", "row-2", "row-3", "row-4"]  # source rows
    expected = ["2024-03-05 14:22", "2024-03-06 10:00", "2024-04-01", "2024-04-02 08:00"]
    assert list(tx["timestamp"]) == [pd.Timestamp(t) for t in expected]
    assert tx["timestamp"].dtype == "datetime64[ns]"
    assert tx["amount"].dtype == "float64" and tx["quantity"].dtype == "int64"
    assert tx["customer_id"].dtype == "str" and tx["store_id"].eq("store_00").all()
    assert tx["category"].isna().all() and tx["channel"].isna().all()  # unmapped: empty
    customers = data.customers.set_index("customer_id")
    assert sorted(customers.index) == ["00042", "0012", "007"]
    assert customers.loc["0012", "joined_at"] == pd.Timestamp("2024-03-05 14:22")
    assert "age_band" not in customers.columns  # not mapped, not invented


def test_explicit_utf8_encoding_with_bom_and_semicolons(tmp_path):
    text = "CustomerID;InvoiceDate;Total\n0001;2024-01-02;5,00\n"
    source = _write(tmp_path / "eu.csv", text.replace("5,00", "5.00"), bom=True)
    _run(tmp_path, source, encoding="utf-8")
    assert list(_load_all(tmp_path / "out")["store_00"].transactions["amount"]) == [5.0]


def test_gbk_file_needs_encoding_and_then_imports(tmp_path):
    text = (
        "会员号,日期,金额,门店\n"
        "0001,2024/03/05 14:22,￥88.00,北京朝阳店\n"
        "0002,2024/03/06 09:00,￥9.50,上海店\n"
    )
    source = _write(tmp_path / "gbk.csv", text, encoding="gbk")
    mapping = "customer_id=会员号,timestamp=日期,amount=金额,store=门店"
    with pytest.raises(DataValidationError, match="--encoding"):
        _run(tmp_path, source, mapping)
    assert not (tmp_path / "out").exists()
    summary = _run(tmp_path, source, mapping, encoding="gbk")
    assert {s.store_id for s in summary.stores} == {"北京朝阳店", "上海店"}


def _hash_store(customer_id: str, n: int) -> int:
    return int.from_bytes(hashlib.sha256(customer_id.encode("utf-8")).digest(), "big") % n


def _random_rows(count: int, customers: int, seed: int = 3) -> list[str]:
    rng = random.Random(seed)
    return [
        f"{rng.randrange(customers):05d},2024-0{rng.randrange(1, 10)}-1{rng.randrange(10)} 10:00,"
        f"{rng.randrange(1, 500)}.{rng.randrange(100):02d}"
        for _ in range(count)
    ]


def test_hash_split_is_stable_order_independent_and_one_store_per_customer(tmp_path):
    rows = _random_rows(600, 150)
    header = "CustomerID,InvoiceDate,Total\n"
    first = _write(tmp_path / "a.csv", header + "\n".join(rows) + "\n")
    shuffled = rows[:]
    random.Random(9).shuffle(shuffled)
    second = _write(tmp_path / "b.csv", header + "\n".join(shuffled) + "\n")

    _run(tmp_path, first, out="out_a", stores=4)
    _run(tmp_path, second, out="out_b", stores=4)

    def placement(out: str) -> dict[str, str]:
        where: dict[str, str] = {}
        for name, data in _load_all(tmp_path / out).items():
            for cid in data.customers["customer_id"]:
                assert cid not in where, "a customer landed in two stores"
                where[cid] = name
            assert set(data.transactions["customer_id"]) <= set(data.customers["customer_id"])
        return where

    a, b = placement("out_a"), placement("out_b")
    assert a == b
    assert len(a) == len({r.split(",")[0] for r in rows})
    names = bucket_names(4)
    assert all(store == names[_hash_store(cid, 4)] for cid, store in a.items())


def test_hash_buckets_are_sha256_mod_n_and_names_are_padded():
    ids = ["0001", "顾客-7", ""]
    assert list(hash_buckets(ids, 7)) == [_hash_store(i, 7) for i in ids]
    assert bucket_names(3) == ["store_00", "store_01", "store_02"]
    assert bucket_names(120)[-1] == "store_119"


def test_store_slugs_are_safe_and_distinct():
    slugs = store_slugs(["Shop A", "shop a", "_hidden", "../etc", "北京 朝阳店", "..."])
    assert len(set(slugs.values())) == 6
    assert len({s.casefold() for s in slugs.values()}) == 6  # case-insensitive filesystems
    for slug in slugs.values():
        assert slug and not slug.startswith((".", "_")) and "/" not in slug
    assert slugs["北京 朝阳店"] == "北京-朝阳店"


def test_store_column_split_keeps_values_as_store_ids(tmp_path):
    text = (
        "CustomerID,InvoiceDate,Total,Branch\n"
        "0001,2024-01-02,5,Shop/North\n"
        "0002,2024-01-03,6,Shop/North\n"
        "0001,2024-01-04,7, Shop South \n"
    )
    source = _write(tmp_path / "branches.csv", text)
    summary = _run(tmp_path, source, store_column="Branch")
    stores = _load_all(tmp_path / "out")
    assert sorted(stores) == ["shop-north", "shop-south"]
    north, south = stores["shop-north"], stores["shop-south"]
    assert north.store_id == "Shop/North" and south.store_id == "Shop South"
    assert set(north.transactions["store_id"]) == {"Shop/North"}
    assert sorted(north.customers["customer_id"]) == ["0001", "0002"]
    assert list(south.customers["customer_id"]) == ["0001"]  # store-local customers
    assert {s.directory: s.transactions for s in summary.stores} == {
        "shop-north": 2,
        "shop-south": 1,
    }


def test_store_column_and_stores_exclude_each_other(tmp_path):
    with pytest.raises(ConfigError, match="exclude each other"):
        ImportRequest(
            source=tmp_path / "x.csv",
            mapping=parse_mapping(BASIC_MAP),
            date_format=None,
            store_column="Branch",
            stores=3,
            consent="all-granted",
            out=tmp_path / "out",
        )


DATES = "CustomerID,InvoiceDate,Total\n1,{a},1\n2,{b},2\n"


@pytest.mark.parametrize(
    ("a", "b", "date_format", "expected"),
    [
        ("05/03/2024 14:22", "06/03/2024 09:00", "%d/%m/%Y %H:%M", "2024-03-05 14:22"),
        ("05/03/2024 14:22", "06/03/2024 09:00", "%m/%d/%Y %H:%M", "2024-05-03 14:22"),
        ("05/03/2024 14:22", "13/03/2024 09:00", None, "2024-03-05 14:22"),  # day-first
        ("05/03/2024 14:22", "03/13/2024 09:00", None, "2024-05-03 14:22"),  # month-first
        ("2024/03/05 14:22", "2024/03/06 09:00", None, "2024-03-05 14:22"),
        ("2024-03-05", "2024-03-06T09:00:00", None, "2024-03-05"),
        ("2024年3月5日 14:22", "2024年3月6日 09:00", None, "2024-03-05 14:22"),
        ("3/5/2024 2:22 PM", "3/13/2024 9:00 AM", None, "2024-03-05 14:22"),
    ],
)
def test_date_formats_explicit_and_detected(tmp_path, a, b, date_format, expected):
    source = _write(tmp_path / "dates.csv", DATES.format(a=a, b=b))
    summary = _run(tmp_path, source, date_format=date_format)
    tx = _load_all(tmp_path / "out")["store_00"].transactions
    assert tx["timestamp"].iloc[0] == pd.Timestamp(expected)
    assert summary.date_format_detected is (date_format is None)


def test_ambiguous_dates_are_refused_with_a_hint(tmp_path):
    source = _write(tmp_path / "dates.csv", DATES.format(a="05/03/2024 14:22", b="06/04/2024 9:00"))
    with pytest.raises(DataValidationError, match=r"ambiguous.*--date-format") as info:
        _run(tmp_path, source)
    assert info.value.findings[0].field == "InvoiceDate"
    assert not (tmp_path / "out").exists()


def test_explicit_date_format_is_honoured_exactly(tmp_path):
    source = _write(tmp_path / "dates.csv", DATES.format(a="05/03/2024 14:22", b="2024-03-06"))
    with pytest.raises(DataValidationError) as info:
        _run(tmp_path, source, date_format="%d/%m/%Y %H:%M")
    assert _error_places(info.value) == {("dates.csv", 2, "InvoiceDate")}
    assert "not a date in the format '%d/%m/%Y %H:%M'" in info.value.findings[0].message


def test_detection_over_many_values_parses_dates_and_times_apart(tmp_path):
    stamps = pd.date_range("2023-01-01", periods=12_000, freq="47min")
    rows = [f"{i % 97:04d},{t:%d/%m/%Y %H:%M},1.5" for i, t in enumerate(stamps)]
    rows[5] = "0001,29/02/2023 10:00,1.5"  # no such day: must not roll over to 1 March
    source = _write(tmp_path / "many.csv", "CustomerID,InvoiceDate,Total\n" + "\n".join(rows))
    with pytest.raises(DataValidationError) as info:
        _run(tmp_path, source)
    assert _error_places(info.value) == {("many.csv", 6, "InvoiceDate")}
    summary = _run(tmp_path, source, skip_invalid_rows=True)
    assert summary.date_format == "%d/%m/%Y %H:%M" and summary.rows_imported == 11_999
    tx = _load_all(tmp_path / "out")["store_00"].transactions
    assert tx["timestamp"].iloc[-1] == stamps[-1]


def test_mapping_errors_name_the_problem(tmp_path):
    source = _write(tmp_path / "x.csv", "CustomerID, InvoiceDate ,Total\n1,2024-01-01,1\n")
    with pytest.raises(ImportMappingError, match=r"'Amount'.*columns are: 'CustomerID'"):
        _run(tmp_path, source, "customer_id=CustomerID,timestamp=InvoiceDate,amount=Amount")
    with pytest.raises(ImportMappingError, match="did you mean 'customerid' -> 'CustomerID'"):
        _run(tmp_path, source, "customer_id=customerid,timestamp=InvoiceDate,amount=Total")
    with pytest.raises(ImportMappingError, match=r"unknown mapping target.*valid targets"):
        parse_mapping("customer_id=A,timestamp=B,amount=C,colour=D")
    with pytest.raises(ImportMappingError, match=r"amount \(or unit_price\)"):
        parse_mapping("customer_id=A,timestamp=B")
    with pytest.raises(ImportMappingError, match="not TARGET=SOURCE"):
        parse_mapping("customer_id=A,timestamp")
    assert not (tmp_path / "out").exists()


def test_bad_rows_name_file_row_and_field_but_never_the_customer(tmp_path):
    text = (
        "CustomerID,InvoiceDate,Total,Qty\n"
        "SECRET-1,2024-01-01,10,1\n"
        "SECRET-2,2024-01-02,ten,1\n"
        "SECRET-3,not a day,3,1\n"
        ",2024-01-04,3,1\n"
        "SECRET-5,2024-01-05,4,1.5\n"
    )
    source = _write(tmp_path / "bad.csv", text)
    mapping = BASIC_MAP + ",quantity=Qty"
    with pytest.raises(DataValidationError) as info:
        _run(tmp_path, source, mapping)
    assert _error_places(info.value) == {
        ("bad.csv", 2, "Total"),
        ("bad.csv", 3, "InvoiceDate"),
        ("bad.csv", 4, "CustomerID"),
        ("bad.csv", 5, "Qty"),
    }
    text_of_error = str(info.value) + " ".join(f.describe() for f in info.value.findings)
    assert "SECRET" not in text_of_error
    assert "ten" not in text_of_error and "not a day" not in text_of_error  # cells never quoted
    assert "not an amount (e.g. 12.50" in text_of_error  # what was expected instead
    assert not (tmp_path / "out").exists()


def test_returns_fail_by_default_and_are_counted_when_skipped(tmp_path):
    text = (
        "CustomerID,InvoiceDate,Total,Qty\n"
        "0001,2024-01-01,10,2\n"
        "0001,2024-01-02,-10,-2\n"
        "0002,2024-01-03,5,0\n"
        "0002,2024-01-04,-1,1\n"
        "0003,2024-01-05,7,1\n"
    )
    source = _write(tmp_path / "returns.csv", text)
    mapping = BASIC_MAP + ",quantity=Qty"
    with pytest.raises(DataValidationError, match="--skip-invalid-rows") as info:
        _run(tmp_path, source, mapping)
    assert ("returns.csv", 2, "Qty") in _error_places(info.value)
    assert ("returns.csv", 4, "Total") in _error_places(info.value)
    assert not (tmp_path / "out").exists()

    summary = _run(tmp_path, source, mapping, skip_invalid_rows=True)
    assert summary.rows_read == 5 and summary.rows_imported == 2
    assert dict(summary.rows_skipped) == {
        "Qty: quantity below 1 (a return or cancellation?)": 2,
        "Total: negative amount (a return or cancellation?)": 1,
    }
    manifest = json.loads((tmp_path / "out" / "store_00" / "store.json").read_text("utf-8"))
    assert manifest["provenance"]["rows_skipped"] == dict(summary.rows_skipped)
    data = _load_all(tmp_path / "out")["store_00"]
    assert sorted(data.customers["customer_id"]) == ["0001", "0003"]


def test_duplicate_transaction_ids_are_reported_with_rows(tmp_path):
    text = (
        "Line,CustomerID,InvoiceDate,Total\n"
        "A1,1,2024-01-01,1\nA2,1,2024-01-02,1\nA1,2,2024-01-03,1\n"
    )
    source = _write(tmp_path / "dup.csv", text)
    with pytest.raises(DataValidationError) as info:
        _run(tmp_path, source, BASIC_MAP + ",transaction_id=Line")
    assert _error_places(info.value) == {("dup.csv", 3, "Line")}


def test_failed_import_leaves_nothing_and_existing_output_is_kept(tmp_path):
    good = _write(tmp_path / "good.csv", "CustomerID,InvoiceDate,Total\n1,2024-01-01,1\n")
    bad = _write(tmp_path / "bad.csv", "CustomerID,InvoiceDate,Total\n1,2024-01-01,-1\n")
    with pytest.raises(DataValidationError):
        _run(tmp_path, bad)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no staging left

    _run(tmp_path, good)
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "out").rglob("*"))
    with pytest.raises(OutputExistsError):
        _run(tmp_path, good)
    with pytest.raises(DataValidationError):
        _run(tmp_path, bad, overwrite=True)  # a failed overwrite keeps the old stores
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "out").rglob("*")) == before
    _run(tmp_path, good, overwrite=True)


def test_future_timestamps_are_caught_in_the_source_file(tmp_path):
    source = _write(tmp_path / "f.csv", "CustomerID,InvoiceDate,Total\n1,2031-01-01,1\n")
    with pytest.raises(DataValidationError) as info:
        _run(tmp_path, source)
    assert _error_places(info.value) == {("f.csv", 1, "InvoiceDate")}


def test_all_granted_writes_ledger_and_manifest_declaration(tmp_path):
    text = (
        "CustomerID,InvoiceDate,Total,Age,Area\n"
        "0001,2024-02-01 10:00,1,25-34,North\n"
        "0002,2024-01-15 09:00,2,,\n"
        "0001,2024-03-01 10:00,3,35-44,\n"
    )
    source = _write(tmp_path / "all.csv", text)
    _run(tmp_path, source, BASIC_MAP + ",age_band=Age,region=Area")
    data = _load_all(tmp_path / "out")["store_00"]

    ledger = data.consents
    assert len(ledger) == 6
    assert set(ledger["purpose"]) == {"analytics", "model_training", "marketing"}
    assert ledger["granted"].all()
    assert set(ledger["source"]) == {"import-declaration:all-granted"}
    assert set(ledger["policy_version"]) == {"declared-at-import"}
    assert set(ledger["timestamp"]) == {pd.Timestamp("2024-01-15 09:00")}  # earliest in file

    customers = data.customers.set_index("customer_id")
    assert customers.loc["0001", "joined_at"] == pd.Timestamp("2024-02-01 10:00")
    assert customers.loc["0001", "age_band"] == "35-44"  # latest non-empty value
    assert customers.loc["0001", "region"] == "North"
    assert pd.isna(customers.loc["0002", "age_band"])

    declaration = data.manifest["consent_declaration"]
    assert declaration["mode"] == "all-granted"
    assert declaration["source_file"] == "all.csv"
    assert declaration["source_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert datetime.fromisoformat(declaration["declared_at"]).tzinfo is not None


def test_consent_file_is_validated_and_split_with_its_customers(tmp_path):
    rows = "".join(f"{i:04d},2024-03-0{1 + i % 5} 10:00,{i}\n" for i in range(1, 30))
    source = _write(tmp_path / "tx.csv", "CustomerID,InvoiceDate,Total\n" + rows)
    consent = _write(
        tmp_path / "consent.csv",
        " Customer_ID ,Purpose,Granted,Timestamp,Source,Policy_Version\n"
        "0001,analytics,yes,2024-01-01 09:00,pos_signup,2024.1\n"
        "0001,analytics,no,2024-06-01 09:00,app,2024.1\n"
        "0002,Marketing,true,2024-02-01,pos_signup,2024.1\n"
        "0999,analytics,true,2023-12-01,pos_signup,2024.1\n",
    )
    summary = _run(tmp_path, source, consent=consent, stores=3)
    assert summary.consent_mode == "file"
    stores = _load_all(tmp_path / "out")
    ledgers = pd.concat([d.consents for d in stores.values()])
    assert len(ledgers) == 4
    for data in stores.values():
        assert set(data.consents["customer_id"]) <= set(data.customers["customer_id"])
        assert "consent_declaration" not in data.manifest
    owner = bucket_names(3)[_hash_store("0999", 3)]
    only_consent = stores[owner].customers.set_index("customer_id").loc["0999"]
    assert only_consent["joined_at"] == pd.Timestamp("2023-12-01")  # a customer without purchases
    first = stores[bucket_names(3)[_hash_store("0001", 3)]].customers.set_index("customer_id")
    assert first.loc["0001", "joined_at"] == pd.Timestamp("2024-01-01 09:00")  # consent earlier


def test_consent_file_problems_always_fail(tmp_path):
    source = _write(tmp_path / "tx.csv", "CustomerID,InvoiceDate,Total\n0001,2024-01-01,1\n")
    consent = _write(
        tmp_path / "consent.csv",
        "customer_id,purpose,granted,timestamp\n"
        "0001,profiling,true,2024-01-01\n"
        "0001,analytics,maybe,2024-01-01\n",
    )
    with pytest.raises(DataValidationError) as info:
        _run(tmp_path, source, consent=consent, skip_invalid_rows=True)
    assert _error_places(info.value) == {
        ("consent.csv", 1, "purpose"),
        ("consent.csv", 2, "granted"),
    }
    missing = _write(
        tmp_path / "c2.csv", "customer_id,purpose,timestamp\n0001,analytics,2024-01-01\n"
    )
    with pytest.raises(ImportMappingError, match=r"lacks column.*granted"):
        _run(tmp_path, source, consent=missing)
    assert not (tmp_path / "out").exists()


def test_parquet_source_with_native_types(tmp_path):
    frame = pd.DataFrame(
        {
            "cust": ["0001", "0002", "0001"],
            "when": pd.to_datetime(["2024-01-01 10:00", "2024-01-02 11:00", "2024-02-01 12:00"]),
            "paid": [10.5, 20.0, 3.25],
            "qty": [1, 2, 1],
            "channel": ["POS", "Mini Program", None],
        }
    )
    source = tmp_path / "export.data"  # recognised by content, not by name
    frame.to_parquet(source, index=False)
    mapping = "customer_id=cust,timestamp=when,amount=paid,quantity=qty,channel=channel"
    summary = _run(tmp_path, source, mapping)
    tx = _load_all(tmp_path / "out")["store_00"].transactions
    assert list(tx["customer_id"]) == ["0001", "0002", "0001"]
    assert list(tx["amount"]) == [10.5, 20.0, 3.25] and list(tx["quantity"]) == [1, 2, 1]
    assert list(tx["channel"].fillna("-")) == ["pos", "mini_program", "-"]
    assert summary.date_format_detected is False


def test_unit_price_times_quantity(tmp_path):
    text = "CustomerID,InvoiceDate,UnitPrice,Quantity\n1,2024-01-01,19.99,3\n2,2024-01-02,¥2.50,4\n"
    source = _write(tmp_path / "lines.csv", text)
    _run(
        tmp_path,
        source,
        "customer_id=CustomerID,timestamp=InvoiceDate,unit_price=UnitPrice,quantity=Quantity",
    )
    tx = _load_all(tmp_path / "out")["store_00"].transactions
    assert list(tx["amount"]) == [59.97, 10.0]
    assert list(tx["quantity"]) == [3, 4]
    with pytest.raises(ImportMappingError, match="not both"):
        parse_mapping("customer_id=A,timestamp=B,amount=C,unit_price=D")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("¥1,234.50", 1234.5),
        ("$12.00", 12.0),
        ("-€3", -3.0),
        ("(12.00)", -12.0),
        ("12.50 CNY", 12.5),
        ("US$ 7", 7.0),
        ("1,5", None),
        ("12abc", None),
        ("", None),
    ],
)
def test_amount_formats(tmp_path, text, expected):
    source = _write(tmp_path / "m.csv", f'CustomerID,InvoiceDate,Total\n1,2024-01-01,"{text}"\n')
    if expected is None or expected < 0:
        with pytest.raises(DataValidationError) as info:
            _run(tmp_path, source)
        assert _error_places(info.value) == {("m.csv", 1, "Total")}
    else:
        _run(tmp_path, source)
        assert _load_all(tmp_path / "out")["store_00"].transactions["amount"].iloc[0] == expected


def test_row_with_an_unquoted_separator_is_refused_not_shifted(tmp_path):
    text = "CustomerID,InvoiceDate,Total\n1,2024-01-01,1\n2,2024-01-02,1,234.00\n"
    source = _write(tmp_path / "shift.csv", text)
    with pytest.raises(DataValidationError, match=r"Expected 3 fields in line 3"):
        _run(tmp_path, source)


def test_store_column_places_consents_where_the_customer_bought(tmp_path):
    text = (
        "CustomerID,InvoiceDate,Total,Branch\n"
        "0001,2024-01-02,5,A\n0001,2024-01-03,5,B\n0002,2024-01-03,5,B\n"
    )
    source = _write(tmp_path / "tx.csv", text)
    consent = _write(
        tmp_path / "consent.csv",
        "customer_id,purpose,granted,timestamp\n"
        "0001,analytics,true,2024-01-01\n"
        "0404,analytics,true,2024-01-01\n",
    )
    stages: list[str] = []
    request = ImportRequest(
        source=source,
        mapping=parse_mapping(BASIC_MAP),
        date_format=None,
        store_column="Branch",
        stores=None,
        consent=consent,
        out=tmp_path / "out",
        now=NOW,
    )
    summary = import_transactions(request, progress=lambda stage, done, total: stages.append(stage))
    assert summary.consent_events_unplaced == 1  # 0404 bought nowhere: no store to hold it
    stores = _load_all(tmp_path / "out")
    assert list(stores["a"].consents["customer_id"]) == ["0001"]
    assert list(stores["b"].consents["customer_id"]) == ["0001"]  # consent is the person's
    assert {"read", "check", "write", "validate"} <= set(stages)
    assert "not placed" in summary.describe()


def test_large_integer_ids_in_parquet_stay_exact(tmp_path):
    frame = pd.DataFrame(
        {
            "cid": pd.Series([9007199254740992, 9007199254740993], dtype="int64"),
            "ts": pd.to_datetime(["2024-01-01 10:00", "2024-01-02 11:00"]),
            "amt": [1.0, 2.0],
        }
    )
    source = tmp_path / "ids.parquet"
    frame.to_parquet(source, index=False)
    _run(tmp_path, source, "customer_id=cid,timestamp=ts,amount=amt")
    store = _load_all(tmp_path / "out")["store_00"]
    assert sorted(store.customers["customer_id"]) == ["9007199254740992", "9007199254740993"]
    assert sorted(store.transactions["customer_id"]) == ["9007199254740992", "9007199254740993"]


CANARY = "CANARY-4f1c"


@pytest.mark.parametrize(
    ("row", "mapping"),
    [
        (f"1,2024-01-01,{CANARY},1", BASIC_MAP),
        (f"1,{CANARY},3,1", BASIC_MAP),
        (f"1,2024-01-01,3,{CANARY}", BASIC_MAP + ",quantity=Qty"),
    ],
)
def test_row_errors_never_quote_the_cell(tmp_path, row, mapping):
    header = "CustomerID,InvoiceDate,Total,Qty\n2,2024-01-02,4,1\n"
    source = _write(tmp_path / "pii.csv", f"{header}{row}\n")
    with pytest.raises(DataValidationError) as info:
        _run(tmp_path, source, mapping)
    text = str(info.value) + " ".join(f.describe() for f in info.value.findings)
    assert CANARY not in text and "row 2" in text


def test_consent_errors_never_quote_the_cell(tmp_path):
    source = _write(tmp_path / "tx.csv", "CustomerID,InvoiceDate,Total\n0001,2024-01-01,1\n")
    consent = _write(
        tmp_path / "consent.csv",
        "customer_id,purpose,granted,timestamp\n"
        f"0001,{CANARY},true,2024-01-01\n"
        f"0001,analytics,{CANARY},2024-01-01\n"
        f"0001,profiling,true,{CANARY}\n",
    )
    with pytest.raises(DataValidationError) as info:
        _run(tmp_path, source, consent=consent)
    text = str(info.value) + " ".join(f.describe() for f in info.value.findings)
    assert CANARY not in text
    assert "expected one of" in text and "not true/false (e.g. true" in text


def test_ambiguous_dates_error_does_not_quote_the_value(tmp_path):
    source = _write(tmp_path / "dates.csv", DATES.format(a="05/03/2024 14:22", b="06/04/2024 9:00"))
    with pytest.raises(DataValidationError) as info:
        _run(tmp_path, source)
    assert "05/03/2024" not in str(info.value) and "row 1" in str(info.value)


@pytest.mark.parametrize(
    ("a", "b", "date_format"),
    [
        ("2024-05-01T07:00:00+08:00", "2024-05-02T09:30:00+08:00", None),
        ("2024-05-01T07:00:00+08:00", "2024-05-02T09:30:00-05:00", None),  # mixed offsets
        ("2024-05-01T07:00:00Z", "2024-05-02 09:30", None),  # offset and naive mixed
        ("2024-05-01 07:00 +0800", "2024-05-02 09:30 +0100", "%Y-%m-%d %H:%M %z"),
    ],
)
def test_utc_offsets_keep_wall_clock_time(tmp_path, a, b, date_format):
    source = _write(tmp_path / "tz.csv", DATES.format(a=a, b=b))
    _run(tmp_path, source, date_format=date_format)
    tx = _load_all(tmp_path / "out")["store_00"].transactions.sort_values("amount")
    assert list(tx["timestamp"]) == [
        pd.Timestamp("2024-05-01 07:00"),
        pd.Timestamp("2024-05-02 09:30"),
    ]


def test_duplicate_header_columns_are_refused(tmp_path):
    source = _write(tmp_path / "dup.csv", "cid,cid,ts,amt\n1,2,2024-01-01,3\n")
    with pytest.raises(ImportMappingError, match=r"'cid' appear more than once"):
        _run(tmp_path, source, "customer_id=cid,timestamp=ts,amount=amt")
    assert not (tmp_path / "out").exists()


def test_unmapped_duplicate_header_columns_are_harmless(tmp_path):
    source = _write(tmp_path / "dup.csv", "cid,note,ts,note,amt\n1,a,2024-01-01,b,3\n")
    summary = _run(tmp_path, source, "customer_id=cid,timestamp=ts,amount=amt")
    assert summary.rows_imported == 1


def test_huge_quantity_is_flagged_without_numpy_warnings(tmp_path):
    source = _write(
        tmp_path / "q.csv",
        "CustomerID,InvoiceDate,Total,Qty\n1,2024-01-01,3,1e20\n2,2024-01-02,4,1\n",
    )
    mapping = BASIC_MAP + ",quantity=Qty"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataValidationError, match="implausible quantity"):
            _run(tmp_path, source, mapping)
        summary = _run(tmp_path, source, mapping, skip_invalid_rows=True)
    assert summary.rows_imported == 1
