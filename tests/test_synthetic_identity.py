"""Synthetic personal data looks and checks like the real thing, and links across stores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedcrm.data.layout import discover_stores
from fedcrm.data.store import load_store
from fedcrm.synthetic.chain import ChainParams, generate_chain
from fedcrm.synthetic.geography import CITIES
from fedcrm.synthetic.identity import MOBILE_PREFIXES, is_valid_resident_id, resident_id_check


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """Every store's customers, with the ground-truth person and store joined on."""
    root = tmp_path_factory.mktemp("identity") / "chain"
    generate_chain(root, ChainParams(stores=4, customers_per_store=300, seed=5))
    frames = [load_store(p).customers.assign(store_id=p.name) for p in discover_stores(root)]
    truth = pd.read_parquet(root / "_ground_truth" / "customers.parquet")
    return pd.concat(frames, ignore_index=True).merge(
        truth[["store_id", "customer_id", "person_id", "n_stores"]]
    )


def _digits(mobile: pd.Series) -> pd.Series:
    return mobile.str.replace(r"\D", "", regex=True).str.replace(r"^86(?=\d{11}$)", "", regex=True)


def test_check_digit_of_the_standard_example():
    # GB 11643-1999's worked example: 11010519491231002X.
    assert resident_id_check(np.array([11010519491231002]))[0] == "X"
    assert is_valid_resident_id(pd.Series(["11010519491231002X"]))[0]


def test_any_single_digit_error_is_caught():
    good = "11010519491231002X"
    typos = [good[:i] + str((int(good[i]) + 1) % 10) + good[i + 1 :] for i in range(17)]
    assert not is_valid_resident_id(pd.Series(typos)).any()
    assert not is_valid_resident_id(
        pd.Series(["1101051949123100", None, "11010519491231002x"])
    ).any()


def test_resident_ids_valid_and_match_birth_gender_and_district(members):
    with_id = members.dropna(subset=["national_id"])
    assert len(with_id) > 200
    assert is_valid_resident_id(with_id["national_id"]).all()
    embedded = pd.to_datetime(with_id["national_id"].str[6:14], format="%Y%m%d")
    assert (embedded.to_numpy() == with_id["birth_date"].to_numpy()).all()
    known = with_id[with_id["gender"].isin(["F", "M"])]
    male = known["national_id"].str[16].astype(int) % 2 == 1
    assert (male == (known["gender"] == "M")).all()
    codes = {str(d.area_code): (c.name, d.name, d.postcode) for c in CITIES for d in c.districts}
    where = with_id["national_id"].str[:6].map(codes)
    assert where.notna().all()
    assert (where.str[0] == with_id["city"]).all()
    has_address = with_id["address"].notna()
    assert (
        with_id[has_address].apply(lambda r: codes[r.national_id[:6]][1] in r.address, axis=1).all()
    )
    assert (where.str[2] == with_id["postcode"])[has_address].all()


def test_postcodes_and_addresses_fit_the_city(members):
    postcodes = {c.name: {d.postcode for d in c.districts} for c in CITIES}
    full = {c.name: c.full_name for c in CITIES}
    rows = members.dropna(subset=["address"])
    assert rows.apply(lambda r: r.postcode in postcodes[r.city], axis=1).all()
    assert rows.apply(lambda r: r.address.startswith(full[r.city]), axis=1).all()
    assert rows["address"].str.fullmatch(r".+[路街道]\d+号\d+栋\d+室").all()


def test_mobiles_are_eleven_digits_with_real_prefixes_in_several_spellings(members):
    digits = _digits(members["mobile"])
    assert digits.str.fullmatch(r"1\d{10}").all()
    assert digits.str[:3].astype(int).isin(MOBILE_PREFIXES).all()
    assert members["mobile"].str.startswith("+86").any()
    assert members["mobile"].str.contains(" ").any()
    assert (members["mobile"] == digits).mean() > 0.5


def test_names_emails_and_birth_dates_look_real(members):
    assert members["name"].str.fullmatch(r"[\u4e00-\u9fff]{2,3}").all()
    emails = members["email"].dropna()
    assert emails.str.fullmatch(r"[A-Za-z0-9._]+@[A-Za-z0-9.]+\.[A-Za-z]+").all()
    assert (emails != emails.str.lower()).any()  # some systems shout
    age = (pd.Timestamp("2025-12-31") - members["birth_date"].dropna()).dt.days / 365.25
    assert age.between(18, 81).all()
    assert (members["joined_at"] - members["birth_date"]).dropna().dt.days.min() >= 18 * 365


def test_multi_store_people_share_contacts_under_different_local_ids(members):
    persons = members.groupby("person_id")["n_stores"].first()
    assert 0.08 <= (persons > 1).mean() <= 0.12
    assert persons.max() == 3
    multi = members[members["n_stores"] > 1].assign(digits=lambda f: _digits(f["mobile"]))
    groups = multi.groupby("person_id")
    assert (groups.size() == groups["n_stores"].first()).all()
    assert (groups["digits"].nunique() == 1).all()
    assert (groups["customer_id"].nunique() == groups.size()).all()
    assert (groups["store_id"].nunique() == groups.size()).all()
    emails = multi.dropna(subset=["email"]).assign(email=lambda f: f["email"].str.lower())
    assert (emails.groupby("person_id")["email"].nunique() == 1).all()
    assert (groups["mobile"].nunique() > 1).any()  # same number, typed differently
    # ... and nobody else has that number.
    assert (
        _digits(members["mobile"]).groupby(members["person_id"]).first().value_counts() == 1
    ).all()
