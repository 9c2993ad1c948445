"""Consent filtering: latest event as of a time decides, per customer and purpose."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from fedcrm.data.store import StoreData
from fedcrm.errors import ConsentError
from fedcrm.privacy.consent import filter_by_consent

AS_OF = pd.Timestamp("2024-06-01 12:00")


def _store(events: list[tuple[str, str, bool, str]], customers: list[str]) -> StoreData:
    """A store with ``customers``, two purchases and one interaction each, and ``events``."""
    cust = pd.DataFrame(
        {
            "customer_id": pd.Series(customers, dtype="str"),
            "joined_at": pd.to_datetime(["2023-01-01"] * len(customers)),
        }
    )
    tx_ids = [c for c in customers for _ in range(2)]
    transactions = pd.DataFrame(
        {
            "transaction_id": [f"t{i}" for i in range(len(tx_ids))],
            "customer_id": pd.Series(tx_ids, dtype="str"),
            "timestamp": pd.to_datetime(["2024-01-01"] * len(tx_ids)),
            "amount": np.ones(len(tx_ids)),
            "quantity": np.ones(len(tx_ids), dtype="int64"),
            "store_id": "s1",
        }
    )
    interactions = pd.DataFrame(
        {
            "customer_id": pd.Series(customers, dtype="str"),
            "timestamp": pd.to_datetime(["2024-01-02"] * len(customers)),
            "kind": "view",
        }
    )
    consents = pd.DataFrame(
        {
            "customer_id": pd.Series([e[0] for e in events], dtype="str"),
            "purpose": pd.Series([e[1] for e in events], dtype="str"),
            "granted": pd.Series([e[2] for e in events], dtype="bool"),
            "timestamp": pd.to_datetime(pd.Series([e[3] for e in events], dtype="str")),
            "source": "pos_signup",
            "policy_version": "2024.1",
        }
    )
    return StoreData("s1", cust, transactions, consents, interactions)


def _decide(events, customers, purpose="analytics", as_of=AS_OF):
    return filter_by_consent(_store(events, customers), purpose, as_of)


def test_grant_is_included() -> None:
    d = _decide([("a", "analytics", True, "2024-01-01")], ["a"])
    assert d.customer_ids == frozenset({"a"})
    assert d.report.included == 1 and d.report.excluded == 0


def test_grant_then_revoke_before_as_of_is_revoked() -> None:
    events = [("a", "analytics", True, "2024-01-01"), ("a", "analytics", False, "2024-03-01")]
    d = _decide(events, ["a"])
    assert d.customer_ids == frozenset()
    assert (d.report.excluded_revoked, d.report.excluded_refused) == (1, 0)


def test_revoke_after_as_of_is_ignored() -> None:
    events = [("a", "analytics", True, "2024-01-01"), ("a", "analytics", False, "2024-07-01")]
    d = _decide(events, ["a"])
    assert d.customer_ids == frozenset({"a"})
    assert d.report.events_after_as_of == 1
    assert d.report.events_considered == 1
    later = _decide(events, ["a"], as_of=pd.Timestamp("2024-07-01"))  # inclusive bound
    assert later.customer_ids == frozenset()


def test_refusal_and_no_record() -> None:
    d = _decide([("a", "analytics", False, "2024-01-01")], ["a", "b"])
    assert d.customer_ids == frozenset()
    assert d.report.excluded_refused == 1
    assert d.report.excluded_no_record == 1
    assert d.report.excluded_revoked == 0


def test_grant_after_as_of_only_is_no_record() -> None:
    d = _decide([("a", "analytics", True, "2024-09-01")], ["a"])
    assert d.customer_ids == frozenset()
    assert d.report.excluded_no_record == 1


def test_regrant_after_revoke_is_included() -> None:
    events = [
        ("a", "analytics", True, "2024-01-01"),
        ("a", "analytics", False, "2024-02-01"),
        ("a", "analytics", True, "2024-03-01"),
    ]
    assert _decide(events, ["a"]).customer_ids == frozenset({"a"})


def test_ledger_order_does_not_matter_only_time() -> None:
    events = [("a", "analytics", True, "2024-03-01"), ("a", "analytics", False, "2024-02-01")]
    assert _decide(events, ["a"]).customer_ids == frozenset({"a"})


def test_purposes_are_independent() -> None:
    events = [
        ("a", "analytics", True, "2024-01-01"),
        ("a", "marketing", False, "2024-01-01"),
        ("b", "marketing", True, "2024-01-01"),
    ]
    assert _decide(events, ["a", "b"], "analytics").customer_ids == frozenset({"a"})
    assert _decide(events, ["a", "b"], "marketing").customer_ids == frozenset({"b"})
    training = _decide(events, ["a", "b"], "model_training")
    assert training.customer_ids == frozenset()
    assert training.report.excluded_no_record == 2


def test_ties_at_same_time_later_ledger_row_wins() -> None:
    grant_then_refuse = [
        ("a", "analytics", True, "2024-01-01"),
        ("a", "analytics", False, "2024-01-01"),
    ]
    refuse_then_grant = [
        ("a", "analytics", False, "2024-01-01"),
        ("a", "analytics", True, "2024-01-01"),
    ]
    d1 = _decide(grant_then_refuse, ["a"])
    assert d1.customer_ids == frozenset()
    assert d1.report.excluded_revoked == 1
    assert _decide(refuse_then_grant, ["a"]).customer_ids == frozenset({"a"})


def test_counts_add_up_and_report_has_no_ids() -> None:
    customers = [f"CUST-{i:03d}" for i in range(10)]
    events = [
        ("CUST-000", "analytics", True, "2024-01-01"),
        ("CUST-001", "analytics", True, "2024-01-01"),
        ("CUST-002", "analytics", False, "2024-01-01"),
        ("CUST-003", "analytics", True, "2024-01-01"),
        ("CUST-003", "analytics", False, "2024-02-01"),
        ("CUST-004", "analytics", True, "2024-08-01"),
        ("GHOST-1", "analytics", True, "2024-01-01"),
    ]
    r = _decide(events, customers).report
    assert (r.included, r.excluded_refused, r.excluded_revoked, r.excluded_no_record) == (
        2,
        1,
        1,
        6,
    )
    assert r.included + r.excluded == r.total_customers == 10
    assert r.events_unknown_customer == 1
    assert r.included_by_policy_version == (("2024.1", 2),)
    text = repr(r) + str(r.as_dict()) + repr(_decide(events, customers))
    assert "CUST-" not in text and "GHOST" not in text


def test_excluded_customers_removed_from_every_table() -> None:
    events = [("a", "analytics", True, "2024-01-01"), ("b", "analytics", False, "2024-01-01")]
    d = _decide(events, ["a", "b", "c"])
    for name, frame in d.data.tables().items():
        assert set(frame["customer_id"]) <= {"a"}, name
    assert len(d.data.customers) == 1
    assert len(d.data.transactions) == 2
    assert len(d.data.interactions) == 1
    assert set(d.data.consents["customer_id"]) == {"a"}


def test_unknown_purpose_lists_valid_ones() -> None:
    with pytest.raises(ConsentError, match="analytics, model_training, marketing"):
        _decide([], ["a"], purpose="profiling")


def test_timezone_aware_as_of_refused() -> None:
    with pytest.raises(ConsentError, match="time zone"):
        _decide([], ["a"], as_of=pd.Timestamp("2024-06-01", tz="UTC"))


def test_string_granted_flags_refused() -> None:
    store = _store([("a", "analytics", True, "2024-01-01")], ["a"])
    store.consents["granted"] = store.consents["granted"].map({True: "False"})
    with pytest.raises(ConsentError, match="true/false"):
        filter_by_consent(store, "analytics", AS_OF)


def test_million_events_vectorised() -> None:
    rng = np.random.default_rng(7)
    n_cust, n_ev = 200_000, 1_000_000
    ids = np.array([f"C{i:07d}" for i in range(n_cust)], dtype=object)
    who = rng.integers(0, n_cust, n_ev)
    consents = pd.DataFrame(
        {
            "customer_id": pd.Series(ids[who], dtype="str"),
            "purpose": pd.Series(rng.choice(["analytics", "marketing"], n_ev), dtype="str"),
            "granted": rng.random(n_ev) < 0.7,
            "timestamp": pd.Timestamp("2023-01-01")
            + pd.to_timedelta(rng.integers(0, 600, n_ev), unit="D"),
            "source": "app",
            "policy_version": "v1",
        }
    )
    customers = pd.DataFrame({"customer_id": pd.Series(ids, dtype="str")})
    empty_tx = pd.DataFrame({"customer_id": pd.Series([], dtype="str")})
    store = StoreData("big", customers, empty_tx, consents, empty_tx.copy())
    start = time.perf_counter()
    d = filter_by_consent(store, "analytics", pd.Timestamp("2024-01-01"))
    elapsed = time.perf_counter() - start
    r = d.report
    assert r.included + r.excluded == n_cust
    assert r.events_considered + r.events_after_as_of == int(
        (consents["purpose"] == "analytics").sum()
    )
    # Reference answer by plain Python for a sample of customers.
    sub = consents[(consents["purpose"] == "analytics") & (consents["timestamp"] <= "2024-01-01")]
    latest: dict[str, tuple[pd.Timestamp, int, bool]] = {}
    for pos, (cid, ts, g) in enumerate(
        zip(sub["customer_id"], sub["timestamp"], sub["granted"], strict=True)
    ):
        if cid not in latest or (ts, pos) >= latest[cid][:2]:
            latest[cid] = (ts, pos, bool(g))
    expected = {cid for cid, (_, _, g) in latest.items() if g}
    assert d.customer_ids == expected
    assert elapsed < 10, f"consent filter took {elapsed:.1f}s for 1M events"
