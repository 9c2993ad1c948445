"""Keyed pseudonyms, contact normalisation, federation linkage and key custody."""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
import time
from pathlib import Path

import pandas as pd
import pytest

from fedcrm.data.layout import StoreLayout
from fedcrm.errors import PrivacyError, PrivacyWarning
from fedcrm.privacy.keys import StoreKeys, load_pseudonym_map, write_pseudonym_map
from fedcrm.privacy.pseudonyms import (
    LINK_DOMAIN,
    STORE_DOMAIN,
    PseudonymMap,
    assign_pseudonyms,
    keyed_pseudonyms,
    normalise_email,
    normalise_mobile,
)

KEY_A, KEY_B, LINK = b"A" * 32, b"B" * 32, b"L" * 32


def _customers(ids: list[str], mobiles: list[str | None], emails: list[str | None]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": pd.Series(ids, dtype="str"),
            "mobile": pd.Series(mobiles, dtype="str"),
            "email": pd.Series(emails, dtype="str"),
        }
    )


def _pseudonym(pmap: PseudonymMap, customer_id: str) -> str:
    return str(pmap.pseudonym_of(pd.Series([customer_id]))[0])


def test_mobile_normalisation() -> None:
    raw = pd.Series(
        [
            "+86 139-1234-5678",
            "0086 13912345678",
            "(139) 1234 5678",
            "8613912345678",
            " 13912345678 ",
            "010-12345678",  # landline: not a mobile
            "12345",
            None,
        ],
        dtype="str",
    )
    out = normalise_mobile(raw)
    assert out[:5].tolist() == ["13912345678"] * 5
    assert out[5:].isna().all()


def test_email_normalisation() -> None:
    out = normalise_email(
        pd.Series([" Canary.XYZ@Example.COM ", "not-an-email", None], dtype="str")
    )
    assert out[0] == "canary.xyz@example.com"
    assert out[1:].isna().all()


def test_keyed_pseudonym_is_truncated_hmac_sha256_with_domain() -> None:
    expected = hmac.new(KEY_A, STORE_DOMAIN + b"CANARY-ID-0001", hashlib.sha256).hexdigest()
    (got,) = keyed_pseudonyms(KEY_A, STORE_DOMAIN, ["CANARY-ID-0001"])
    assert got == expected[:32] and len(got) == 32
    assert keyed_pseudonyms(KEY_A, LINK_DOMAIN, ["x"]) != keyed_pseudonyms(
        KEY_A, STORE_DOMAIN, ["x"]
    )
    long_key = bytes(range(100))  # longer than the SHA-256 block: hashed first (RFC 2104)
    reference = hmac.new(long_key, LINK_DOMAIN + "é".encode(), hashlib.sha256).hexdigest()[:32]
    assert keyed_pseudonyms(long_key, LINK_DOMAIN, ["é"]) == [reference]


def test_stable_for_a_key_and_different_across_keys() -> None:
    customers = _customers(["c1", "c2"], [None, None], [None, None])
    a1 = assign_pseudonyms(customers, StoreKeys(KEY_A))
    a2 = assign_pseudonyms(customers.iloc[::-1], StoreKeys(KEY_A))
    b = assign_pseudonyms(customers, StoreKeys(KEY_B))
    assert _pseudonym(a1, "c1") == _pseudonym(a2, "c1")
    assert _pseudonym(a1, "c1") != _pseudonym(b, "c1")
    assert _pseudonym(a1, "c1") != _pseudonym(a1, "c2")


def test_linkage_equal_across_stores_for_same_person() -> None:
    store_a = _customers(
        ["A-1", "A-2", "A-3"], ["+86 139-1234-5678", None, None], [None, "X@Y.com", None]
    )
    store_b = _customers(
        ["B-77", "B-78", "A-3"], ["13912345678", None, None], [None, " x@y.com", None]
    )
    a = assign_pseudonyms(store_a, StoreKeys(KEY_A, LINK))
    b = assign_pseudonyms(store_b, StoreKeys(KEY_B, LINK))
    assert _pseudonym(a, "A-1") == _pseudonym(b, "B-77")  # by mobile
    assert _pseudonym(a, "A-2") == _pseudonym(b, "B-78")  # by e-mail
    assert _pseudonym(a, "A-3") != _pseudonym(b, "A-3")  # no contact: store keys differ
    assert a.stats is not None
    assert (a.stats.linked_by_mobile, a.stats.linked_by_email, a.stats.store_key) == (1, 1, 1)
    unlinked_a = assign_pseudonyms(store_a, StoreKeys(KEY_A))
    unlinked_b = assign_pseudonyms(store_b, StoreKeys(KEY_B))
    assert _pseudonym(unlinked_a, "A-1") != _pseudonym(unlinked_b, "B-77")


def test_shared_contact_in_one_store_falls_back_to_store_key() -> None:
    store_a = _customers(
        ["A-1", "A-2", "A-3"], ["13912345678", "139 1234 5678", "13800000000"], [None] * 3
    )
    store_b = _customers(["B-1"], ["13912345678"], [None])
    a = assign_pseudonyms(store_a, StoreKeys(KEY_A, LINK))
    b = assign_pseudonyms(store_b, StoreKeys(KEY_B, LINK))
    assert a.stats is not None and a.stats.linkage_collisions == 2
    assert a.stats.linked_by_mobile == 1 and a.stats.store_key == 2
    assert _pseudonym(a, "A-1") != _pseudonym(a, "A-2")
    assert _pseudonym(b, "B-1") not in {_pseudonym(a, "A-1"), _pseudonym(a, "A-2")}
    store_only = assign_pseudonyms(store_a, StoreKeys(KEY_A))
    assert _pseudonym(a, "A-1") == _pseudonym(store_only, "A-1")


def test_ids_outside_customers_get_store_pseudonyms() -> None:
    pmap = assign_pseudonyms(
        _customers(["c1"], [None], [None]), StoreKeys(KEY_A), pd.Series(["c1", "orphan", None])
    )
    assert len(pmap) == 2 and pmap.stats is not None and pmap.stats.ids_outside_customers == 1
    assert pmap.customer_id_of(pd.Series([_pseudonym(pmap, "orphan")]))[0] == "orphan"


def test_hashing_200k_ids_is_fast() -> None:
    ids = [f"C{i:08d}" for i in range(200_000)]
    customers = _customers(ids, [None] * len(ids), [None] * len(ids))
    start = time.perf_counter()
    pmap = assign_pseudonyms(customers, StoreKeys(KEY_A))
    elapsed = time.perf_counter() - start
    assert len(pmap) == 200_000 and pmap.frame["pseudonym"].is_unique
    assert elapsed < 2.0, f"{elapsed:.2f}s for 200k ids"


def test_repeated_customer_ids_refused() -> None:
    with pytest.raises(PrivacyError, match="repeated"):
        assign_pseudonyms(_customers(["c1", "c1"], [None, None], [None, None]), StoreKeys(KEY_A))


# --- key custody -------------------------------------------------------------------------------


def test_key_created_once_with_private_mode(tmp_path: Path) -> None:
    layout = StoreLayout(tmp_path / "store")
    keys = StoreKeys.load_or_create(layout)
    path = layout.keys_dir / "pseudonym.key"
    assert path.read_bytes() == keys.pseudonym_key and len(keys.pseudonym_key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(layout.keys_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(layout.private_dir.stat().st_mode) == 0o700
    assert StoreKeys.load_or_create(layout).pseudonym_key == keys.pseudonym_key
    assert keys.linkage_key is None
    assert [p.name for p in layout.keys_dir.iterdir()] == ["pseudonym.key"]  # no temp left


def test_existing_key_is_never_replaced(tmp_path: Path) -> None:
    layout = StoreLayout(tmp_path)
    layout.keys_dir.mkdir(parents=True)
    (layout.keys_dir / "pseudonym.key").write_bytes(KEY_A)
    os.chmod(layout.keys_dir / "pseudonym.key", 0o600)
    assert StoreKeys.load_or_create(layout).pseudonym_key == KEY_A


def test_keys_never_in_repr(tmp_path: Path) -> None:
    link = tmp_path / "federation.key"
    link.write_text(LINK.hex() + "\n")
    link.chmod(0o600)
    keys = StoreKeys.load_or_create(StoreLayout(tmp_path / "s"), link)
    assert keys.linkage_key == LINK
    for text in (repr(keys), str(keys), f"{keys}"):
        assert keys.pseudonym_key.hex() not in text and str(keys.pseudonym_key) not in text
        assert LINK.hex() not in text and "LLLL" not in text
        assert keys.pseudonym_key_id in text


def test_linkage_key_is_never_created(tmp_path: Path) -> None:
    missing = tmp_path / "federation.key"
    with pytest.raises(PrivacyError, match="never creates"):
        StoreKeys.load_or_create(StoreLayout(tmp_path / "s"), missing)
    assert not missing.exists()


def test_malformed_and_exposed_keys(tmp_path: Path) -> None:
    layout = StoreLayout(tmp_path)
    layout.keys_dir.mkdir(parents=True)
    path = layout.keys_dir / "pseudonym.key"
    path.write_bytes(b"short")
    path.chmod(0o600)
    with pytest.raises(PrivacyError, match="malformed"):
        StoreKeys.load_or_create(layout)
    path.write_bytes(KEY_A)
    path.chmod(0o644)
    with pytest.warns(PrivacyWarning, match="chmod 600"):
        StoreKeys.load_or_create(layout)


def test_linkage_key_must_differ_from_store_key() -> None:
    with pytest.raises(PrivacyError):
        StoreKeys(KEY_A, KEY_A)


def test_pseudonym_map_round_trip(tmp_path: Path) -> None:
    layout = StoreLayout(tmp_path)
    with pytest.raises(PrivacyError, match="no pseudonym map"):
        load_pseudonym_map(layout)
    pmap = assign_pseudonyms(_customers(["c1", "c2"], [None, None], [None, None]), StoreKeys(KEY_A))
    path = write_pseudonym_map(layout, pmap)
    assert path == layout.pseudonym_map_path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = load_pseudonym_map(layout)
    pd.testing.assert_frame_equal(loaded.frame, pmap.frame)
    assert loaded.customer_id_of(pd.Series([_pseudonym(pmap, "c2")]))[0] == "c2"
    assert "c1" not in repr(loaded)
