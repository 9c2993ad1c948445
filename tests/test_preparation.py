"""The store pipeline end to end: load → consent → de-identification → features, labels."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import tiny_store_data
from fedcrm.cli import app
from fedcrm.clients.preparation import PreparationRequest, prepare_store
from fedcrm.data.layout import StoreLayout
from fedcrm.data.store import StoreData, write_store
from fedcrm.errors import ConfigError
from fedcrm.privacy.keys import load_pseudonym_map

CANARIES = (
    "CANARY金丝雀",
    "13912345678",
    "canary.xyz@example.com",
    "110101199001011237",
    "CANARY路1号",
)


def _ledger(*events: tuple[str, str, bool, str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": [e[0] for e in events],
            "purpose": [e[1] for e in events],
            "granted": [e[2] for e in events],
            "timestamp": pd.to_datetime([e[3] for e in events]).astype("datetime64[ns]"),
            "source": ["app_privacy_center"] * len(events),
            "policy_version": ["2024.1"] * len(events),
        }
    )


def _store_with_canaries() -> StoreData:
    base = tiny_store_data()
    customers = base.customers.copy()
    customers.loc[0, ["name", "mobile", "email", "national_id", "address"]] = list(CANARIES)
    consents = _ledger(
        ("0001", "model_training", True, "2024-01-02"),  # consents throughout
        ("0002", "model_training", True, "2024-02-03"),
        ("0002", "model_training", False, "2024-03-10"),  # revoked before the cutoff
        ("0003", "model_training", True, "2024-03-04"),
        ("0003", "model_training", False, "2024-04-20"),  # revoked after the cutoff
    )
    return replace(base, customers=customers, consents=consents)


def test_only_consenting_customers_at_processing_time_reach_features(tmp_path):
    root = tmp_path / "s1"
    write_store(_store_with_canaries(), root, fmt="csv")
    request = PreparationRequest(cutoff="2024-03-15", horizon_days=30)
    prepared = prepare_store(root, request)
    pmap = load_pseudonym_map(StoreLayout(root))
    local_ids = set(pmap.customer_id_of(pd.Series(prepared.features.customer_ids)))
    # 0002 revoked before T; 0003 revoked after T but before processing: both out.
    assert local_ids == {"0001"}
    assert prepared.consent.excluded_revoked == 2 and prepared.consent.included == 1

    # Replaying the run as it was at the cutoff brings 0003 back, never 0002.
    replay = prepare_store(root, replace(request, consent_as_of=pd.Timestamp("2024-03-15")))
    pmap = load_pseudonym_map(StoreLayout(root))
    assert set(pmap.customer_id_of(pd.Series(replay.features.customer_ids))) == {"0001", "0003"}


def test_no_canary_or_local_id_survives_into_features_labels_or_reports(tmp_path):
    root = tmp_path / "s1"
    write_store(_store_with_canaries(), root, fmt="parquet")
    prepared = prepare_store(root, PreparationRequest(cutoff="2024-03-15", horizon_days=30))
    released = "\n".join(
        [
            prepared.features.to_frame().to_csv(),
            pd.Series(prepared.features.customer_ids).to_csv(),
            json.dumps(prepared.summary(), default=str),
            json.dumps(prepared.deidentification.as_dict(), default=str),
            repr(prepared),
        ]
    )
    for canary in (*CANARIES, "0001", "0002", "0003"):
        assert canary not in released


def test_rows_after_the_cutoff_do_not_change_features(tmp_path):
    base = _store_with_canaries()
    later = base.transactions.iloc[[0]].copy()
    later["transaction_id"] = "t-late"
    later["timestamp"] = pd.Timestamp("2024-03-15")  # exactly at T: must be unseen
    later["amount"] = 999.0
    with_late = replace(base, transactions=pd.concat([base.transactions, later], ignore_index=True))
    request = PreparationRequest(cutoff="2024-03-15", horizon_days=30, with_labels=False)
    write_store(base, tmp_path / "a", fmt="csv")
    write_store(with_late, tmp_path / "b", fmt="csv")
    a = prepare_store(tmp_path / "a", request)
    b = prepare_store(tmp_path / "b", request)
    np.testing.assert_array_equal(a.features.matrix, b.features.matrix)
    # ... and the check can fail: a change before T does change them.
    earlier = replace(
        with_late, transactions=with_late.transactions.assign(amount=lambda f: f["amount"] * 3)
    )
    write_store(earlier, tmp_path / "c", fmt="csv")
    c = prepare_store(tmp_path / "c", request)
    assert not np.array_equal(a.features.matrix, c.features.matrix)


def test_consent_checked_before_the_cutoff_is_refused(tmp_path):
    write_store(_store_with_canaries(), tmp_path / "s1", fmt="csv")
    with pytest.raises(ConfigError, match="before the cutoff"):
        prepare_store(
            tmp_path / "s1",
            PreparationRequest(cutoff="2024-03-15", consent_as_of=pd.Timestamp("2024-03-01")),
        )


def test_prepare_command_prints_counts_but_no_pii(tmp_path):
    write_store(_store_with_canaries(), tmp_path / "s1", fmt="csv")
    result = CliRunner().invoke(
        app,
        [
            "prepare",
            str(tmp_path / "s1"),
            "--cutoff",
            "2024-03-15",
            "--horizon-days",
            "30",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["consent"]["included"] == 1
    assert {
        c["column"] for c in report["deidentification"]["columns"] if c["action"] == "drop"
    } >= {
        "name",
        "mobile",
        "email",
        "national_id",
        "address",
    }
    for canary in CANARIES:
        assert canary not in result.output


def test_pseudonym_map_keeps_every_purpose_for_local_scoring(tmp_path):
    root = tmp_path / "s1"
    write_store(tiny_store_data(), root, fmt="csv")
    first = prepare_store(
        root, PreparationRequest(cutoff="2024-03-15", purpose="analytics", horizon_days=30)
    )
    before = set(pd.Series(first.features.customer_ids))
    with pytest.raises(ConfigError, match="no consented customer"):
        prepare_store(
            root, PreparationRequest(cutoff="2024-03-15", purpose="marketing", horizon_days=30)
        )
    pmap = load_pseudonym_map(StoreLayout(root))
    assert before <= set(pmap.frame["pseudonym"])
    assert set(pmap.customer_id_of(pd.Series(sorted(before)))) == {"0001", "0002"}


def test_a_cutoff_before_all_history_is_refused(tmp_path):
    write_store(tiny_store_data(), tmp_path / "s1", fmt="csv")
    with pytest.raises(ConfigError, match="no consented customer has a purchase before"):
        prepare_store(tmp_path / "s1", PreparationRequest(cutoff="2019-01-01", purpose="analytics"))
