"""De-identification: canary PII never leaves, fail-closed coverage, policies, generalisers."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedcrm.data.contract import TABLES
from fedcrm.data.store import StoreData
from fedcrm.errors import ConfigError, DeidentificationError, PrivacyWarning
from fedcrm.privacy.boundary import release_for_purpose
from fedcrm.privacy.deidentification import (
    ColumnRule,
    DeidentificationPolicy,
    DeidentifiedStore,
    deidentify,
    deidentify_with_map,
)
from fedcrm.privacy.generalisation import age_band, gender, month_start, postcode_prefix, region
from fedcrm.privacy.keys import StoreKeys

REF = pd.Timestamp("2024-06-15")
KEY_A, KEY_B, LINK = b"a" * 32, b"b" * 32, b"k" * 32
NATIONAL_ID = "110105198706150038"
CANARIES = (
    "CANARY", "金丝雀", "13912345678", "1391234", "139-1234", "canary.xyz", "example.com",
    NATIONAL_ID, "19870615", "CANARY路", "1987-06-15", "100020", "2023-05-17", "wxid",
)  # fmt: skip


CUSTOMER_OUTPUT = ["customer_id", "gender", "age_band", "region", "postcode_prefix"]
CUSTOMER_OUTPUT += ["member_tier", "joined_at"]
TRANSACTION_OUTPUT = ["customer_id", "timestamp", "amount", "quantity", "category", "product_id"]
TRANSACTION_OUTPUT += ["channel", "store_id", "discount"]


def canary_store(
    store_id: str = "s1", mobile: str = "13912345678", prefix: str = "CANARY-ID"
) -> StoreData:
    ids = [f"{prefix}-000{i}" for i in range(1, 5)]
    customers = pd.DataFrame(
        {
            "customer_id": ids,
            "name": ["CANARY金丝雀", "CANARY金丝雀二", "CANARY金丝雀三", None],
            "mobile": [mobile, "+86 139-1234-0002", None, "13912340004"],
            "email": ["canary.xyz@example.com", None, "CANARY.three@example.com", None],
            "national_id": [NATIONAL_ID, "110105198706150046", None, None],
            "birth_date": pd.to_datetime(["1987-06-15", "2006-06-16", None, "1959-06-15"]),
            "gender": ["女", "M", "unknown", None],
            "address": ["CANARY路1号", "CANARY路2号", None, None],
            "city": ["北京市", "Shanghai", "CANARYVILLE", None],
            "postcode": ["100020", "200031", "x", None],
            "member_tier": ["gold", "regular", None, "silver"],
            "joined_at": pd.to_datetime(
                ["2023-05-17 08:09", "2023-06-30 00:00", "2024-01-01 00:00", "2024-02-29 00:00"]
            ),
        },
        index=pd.Index(ids, name="customer_id_index"),  # an identifying index must not leak
    ).astype({"customer_id": "str", "name": "str", "mobile": "str", "email": "str"})
    transactions = pd.DataFrame(
        {
            "transaction_id": [f"CANARY-TX-{i}" for i in range(6)],
            "customer_id": pd.Series([ids[0], ids[0], ids[1], ids[2], ids[3], ids[3]], dtype="str"),
            "timestamp": pd.to_datetime(["2024-03-01 10:00"] * 6),
            "amount": [10.0, 20.0, 30.0, 40.0, 50.0, 60.0],
            "quantity": np.array([1, 2, 1, 1, 3, 1], dtype="int64"),
            "category": "food/snacks",
            "product_id": "p1",
            "channel": "pos",
            "store_id": store_id,
            "discount": 0.0,
        }
    )
    interactions = pd.DataFrame(
        {
            "customer_id": pd.Series([ids[0], ids[2]], dtype="str"),
            "timestamp": pd.to_datetime(["2024-03-02", "2024-03-03"]),
            "kind": ["review", "complaint"],
            "category": ["food/snacks", None],
            "score": [4.0, None],
        }
    )
    consents = pd.DataFrame(
        {
            "customer_id": pd.Series(ids, dtype="str"),
            "purpose": "analytics",
            "granted": True,
            "timestamp": pd.to_datetime(["2023-05-17"] * 4),
            "source": "CANARY-source",
            "policy_version": "CANARY-v1",
        }
    )
    return StoreData(store_id, customers, transactions, consents, interactions)


def _everything_as_text(out: DeidentifiedStore) -> str:
    parts = [
        repr(out),
        repr(out.report),
        json.dumps(out.report.as_dict(), ensure_ascii=False, default=str),
    ]
    for name, frame in out.tables().items():
        parts += [name, " ".join(map(str, frame.columns)), " ".join(map(str, frame.index))]
        parts += [frame.to_csv(), frame.to_json(force_ascii=False, date_format="iso")]
        parts += [str(v) for v in frame.to_numpy().ravel()]
    return "\n".join(parts)


def test_canary_pii_never_leaves() -> None:
    store = canary_store()
    out = deidentify(store, None, StoreKeys(KEY_A), REF)
    text = _everything_as_text(out)
    leaked = [c for c in CANARIES if c.lower() in text.lower()]
    assert leaked == [], f"leaked: {leaked}"
    for cid in store.customers["customer_id"]:
        assert cid not in text
    assert "pseudonym_map" not in {f.name for f in dataclasses.fields(out)}
    # the output still carries the de-identified information, linked by pseudonym
    assert out.customers["customer_id"].str.fullmatch(r"[0-9a-f]{32}").all()
    assert set(out.transactions["customer_id"]) == set(out.customers["customer_id"])
    assert out.customers["age_band"].tolist()[:2] == ["35-44", "<18"]
    assert out.customers["joined_at"].dt.day.eq(1).all()


def test_output_columns_match_the_feature_builder_contract() -> None:
    out = deidentify(canary_store(), DeidentificationPolicy.default(), StoreKeys(KEY_A), REF)
    assert list(out.customers.columns) == CUSTOMER_OUTPUT
    assert list(out.transactions.columns) == TRANSACTION_OUTPUT
    assert list(out.interactions.columns) == [
        "customer_id",
        "timestamp",
        "kind",
        "category",
        "score",
    ]
    assert out.customers["gender"].tolist() == ["F", "M", "U", "U"]
    assert out.customers["region"].tolist()[:3] == ["north_china", "east_china", "other"]
    assert out.customers["postcode_prefix"].tolist()[:2] == ["100", "200"]
    assert out.customers.index.equals(pd.RangeIndex(4))


def test_report_counts_per_column() -> None:
    out = deidentify(canary_store(), None, StoreKeys(KEY_A), REF)
    by_col = {(c.table, c.column): c for c in out.report.columns}
    assert by_col["customers", "national_id"].action == "drop"
    assert by_col["customers", "national_id"].rows_affected == 2
    assert by_col["customers", "city"].rows_unmapped == 1  # CANARYVILLE → other
    assert by_col["customers", "postcode"].rows_unmapped == 1  # "x"
    assert by_col["transactions", "transaction_id"].action == "drop"
    assert by_col["transactions", "amount"].action == "keep"
    assert out.report.output_rows == (("customers", 4), ("transactions", 6), ("interactions", 2))
    assert "consents" in out.report.tables_not_released


def test_pseudonyms_stable_per_key_and_linked_across_stores() -> None:
    a1 = deidentify(canary_store(), None, StoreKeys(KEY_A), REF)
    a2 = deidentify(canary_store(), None, StoreKeys(KEY_A), REF)
    b = deidentify(canary_store(), None, StoreKeys(KEY_B), REF)
    assert a1.customers["customer_id"].tolist() == a2.customers["customer_id"].tolist()
    assert not set(a1.customers["customer_id"]) & set(b.customers["customer_id"])

    store_a = canary_store("s1", mobile="+86 139-1234-5678", prefix="CANARY-A")
    store_b = canary_store("s2", mobile="13912345678", prefix="CANARY-B")
    with pytest.warns(PrivacyWarning, match="linkage is on"):
        la, map_a = deidentify_with_map(store_a, None, StoreKeys(KEY_A, LINK), REF)
    with pytest.warns(PrivacyWarning, match="linkage is on"):
        lb = deidentify(store_b, None, StoreKeys(KEY_B, LINK), REF)
    assert la.customers["customer_id"][0] == lb.customers["customer_id"][0]
    assert la.customers["customer_id"][0] != a1.customers["customer_id"][0]
    assert map_a.customer_id_of(la.customers["customer_id"])[0] == "CANARY-A-0001"
    assert la.report.pseudonyms.linked_by_mobile == 3 and la.report.linkage_key_id is not None
    assert "CANARY" not in _everything_as_text(la)


def test_unknown_column_refused_by_name() -> None:
    store = canary_store()
    store.customers["wechat_openid"] = "wxid_CANARY"
    with pytest.raises(DeidentificationError, match=r"customers\.wechat_openid") as err:
        deidentify(store, None, StoreKeys(KEY_A), REF)
    assert "wxid" not in str(err.value)
    store.transactions["cashier"] = "x"
    with pytest.raises(DeidentificationError, match=r"transactions\.cashier"):
        deidentify(store, None, StoreKeys(KEY_A), REF)


def test_extended_policy_drops_the_extra_column() -> None:
    store = canary_store()
    store.customers["wechat_openid"] = "wxid_CANARY"
    policy = DeidentificationPolicy.default().with_rules(
        ColumnRule("customers", "wechat_openid", "drop")
    )
    out = deidentify(store, policy, StoreKeys(KEY_A), REF)
    assert "wechat_openid" not in out.customers.columns
    assert "wxid" not in _everything_as_text(out)


def test_policy_missing_a_contract_column_refused() -> None:
    full = DeidentificationPolicy.default()
    assert full.missing_contract_columns() == ()
    partial = DeidentificationPolicy(tuple(r for r in full.rules if r.column != "national_id"))
    store = canary_store()
    store = dataclasses.replace(store, customers=store.customers.drop(columns="national_id"))
    with pytest.raises(DeidentificationError, match=r"customers\.national_id"):
        deidentify(store, partial, StoreKeys(KEY_A), REF)


def test_default_policy_follows_identifier_classes() -> None:
    policy = DeidentificationPolicy.default()
    for table in ("customers", "transactions", "interactions"):
        for col in TABLES[table].columns:
            rule = policy.rule_for(table, col.name)
            assert rule is not None
            expected = {"customer_key": "pseudonymise", "direct": "drop", "record_key": "drop"}
            expected |= {"quasi": "generalise", "none": "keep"}
            assert rule.action == expected[col.identifier.value], (table, col.name)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"table": "customers", "column": "mobile", "action": "keep"}, "direct identifier"),
        ({"table": "customers", "column": "customer_id", "action": "keep"}, "customer_key"),
        ({"table": "customers", "column": "city", "action": "generalise"}, "generaliser"),
        (
            {"table": "customers", "column": "city", "action": "generalise", "generaliser": "zip"},
            "valid:",
        ),
        ({"table": "customers", "column": "city", "action": "hide"}, "valid: drop"),
        ({"table": "consents", "column": "purpose", "action": "keep"}, "unknown table"),
        ({"table": "customers", "column": "name", "action": "drop", "output": "x"}, "no output"),
    ],
)
def test_invalid_rules_refused(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ColumnRule(**kwargs)  # type: ignore[arg-type]


def test_policy_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(
        'name = "store-17"\nbase = "default"\n'
        '[[rules]]\ntable = "customers"\ncolumn = "wechat_openid"\naction = "drop"\n'
        '[[rules]]\ntable = "customers"\ncolumn = "member_tier"\naction = "drop"\n',
        encoding="utf-8",
    )
    policy = DeidentificationPolicy.from_toml(path)
    assert policy.name == "store-17"
    store = canary_store()
    store.customers["wechat_openid"] = "wxid_CANARY"
    out = deidentify(store, policy, StoreKeys(KEY_A), REF)
    assert "member_tier" not in out.customers.columns and "wechat_openid" not in out.customers
    assert out.report.policy_digest != DeidentificationPolicy.default().digest()

    path.write_text('[[rules]]\ntable = "customers"\ncolumn = "name"\naction = "drop"\n')
    with pytest.raises(DeidentificationError, match="does not cover"):
        deidentify(store, DeidentificationPolicy.from_toml(path), StoreKeys(KEY_A), REF)
    for bad in (
        'colour = "red"\n',
        '[[rules]]\ntable = "customers"\ncolumn = "name"\naction = "keep"\n',
    ):
        path.write_text(bad)
        with pytest.raises(ConfigError):
            DeidentificationPolicy.from_toml(path)


def test_existing_generalised_columns_fill_gaps_and_are_checked() -> None:
    store = canary_store()
    store.customers["age_band"] = pd.Series(
        ["65+", "65+", "25-34", "exactly 61"], dtype="str"
    ).values
    store.customers["region"] = pd.Series(["southwest", None, "华南", "Lhasa"], dtype="str").values
    out = deidentify(store, None, StoreKeys(KEY_A), REF)
    # computed values win; imported ones fill gaps; unknown labels do not pass through
    assert out.customers["age_band"].tolist()[:3] == ["35-44", "<18", "25-34"]
    assert out.customers["age_band"].tolist()[3] == "65+"  # from birth_date
    assert out.customers["region"].tolist() == ["north_china", "east_china", "other", "southwest"]


def test_keeping_a_quasi_identifier_warns() -> None:
    policy = DeidentificationPolicy.default().with_rules(ColumnRule("customers", "city", "keep"))
    with pytest.warns(PrivacyWarning, match=r"customers\.city"):
        out = deidentify(canary_store(), policy, StoreKeys(KEY_A), REF)
    assert "city" in out.customers.columns  # the store's choice, stated loudly


def test_release_for_purpose_filters_then_deidentifies() -> None:
    store = canary_store()
    store.consents.loc[1, "granted"] = False  # customer 2 refuses analytics
    store.consents.loc[3, "purpose"] = "marketing"  # customer 4 never asked for analytics
    keys = StoreKeys(KEY_A)
    release = release_for_purpose(store, "analytics", pd.Timestamp("2024-06-01"), keys)
    assert release.consent.included == 2 and release.consent.excluded_refused == 1
    assert release.data.report.output_rows == (
        ("customers", 2),
        ("transactions", 3),
        ("interactions", 2),
    )
    kept = release.pseudonym_map.customer_id_of(release.data.transactions["customer_id"])
    assert set(kept) == {"CANARY-ID-0001", "CANARY-ID-0003"}
    assert release.data.report.reference_time == "2024-06-01T00:00:00"
    nobody = release_for_purpose(store, "model_training", pd.Timestamp("2024-06-01"), keys)
    assert [len(f) for f in nobody.data.tables().values()] == [0, 0, 0]
    assert list(nobody.data.customers.columns) == CUSTOMER_OUTPUT


def test_reference_time_must_be_naive() -> None:
    with pytest.raises(DeidentificationError, match="naive"):
        deidentify(canary_store(), None, StoreKeys(KEY_A), pd.Timestamp("2024-01-01", tz="UTC"))


def test_no_warning_without_linkage() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        deidentify(canary_store(), None, StoreKeys(KEY_A), REF)


# --- generalisers -------------------------------------------------------------------------------


def test_age_band_boundaries() -> None:
    ref = pd.Timestamp("2024-03-01")
    births = {
        "2006-03-01": "18-24",  # 18th birthday today
        "2006-03-02": "<18",  # 18 tomorrow
        "1999-03-02": "18-24",  # 24, 25 tomorrow
        "1999-03-01": "25-34",
        "1959-03-02": "55-64",
        "1959-03-01": "65+",
        "2024-03-01": "<18",  # born today: age 0
        "2004-02-29": "18-24",  # leap-day birthday, 20 years
    }
    got = age_band(pd.Series(pd.to_datetime(list(births))), ref)
    assert got.tolist() == list(births.values())
    edge = age_band(pd.Series(pd.to_datetime(["2024-03-02", None])), ref)
    assert edge.isna().all()  # born after the reference time, or unknown
    leap = age_band(pd.Series(pd.to_datetime(["2006-02-29"], errors="coerce")), ref)
    assert leap.isna().all()  # not a date


def test_region_mapping() -> None:
    cities = {
        "北京": "north_china", "北京市": "north_china", "Beijing": "north_china",
        "上海市": "east_china", "shanghai": "east_china", "广州": "south_china",
        "Shenzhen City": "south_china", "成都市": "southwest", "Xi'an": "northwest",
        "武汉": "central_china", "沈阳市": "northeast", "Harbin": "northeast",
        "广东省": "south_china", "广东省深圳市南山区": "south_china", "内蒙古自治区": "north_china",
        "Shanxi": "north_china", "Shaanxi": "northwest", "宜春市": "east_china",
        "east_china": "east_china", "Atlantis": "other", "": "other",
    }  # fmt: skip
    got = region(pd.Series(list(cities), dtype="str"))
    assert dict(zip(cities, got, strict=True)) == cities
    assert region(pd.Series([None], dtype="str")).isna().all()


def test_postcode_prefix_and_month_and_gender() -> None:
    codes = pd.Series(["100020", " 200031", "12", "ab123", None], dtype="str")
    assert postcode_prefix(codes).tolist()[:2] == ["100", "200"]
    assert postcode_prefix(pd.Series(["12", "ab123", None], dtype="str")).isna().all()
    for unit in ("ns", "us", "s"):
        raw = pd.to_datetime(["2024-02-29 23:59:59", "2023-12-01", None], format="ISO8601")
        ts = pd.Series(raw).astype(f"datetime64[{unit}]")
        got = month_start(ts)
        assert got.dtype == ts.dtype
        assert got[:2].tolist() == [pd.Timestamp("2024-02-01"), pd.Timestamp("2023-12-01")]
        assert pd.isna(got[2])
    raw = pd.Series(["F", "female", "女", "M", "Male", "男性", "x", None], dtype="str")
    assert gender(raw).tolist() == ["F", "F", "F", "M", "M", "M", "U", "U"]
