"""The erasure register: a canary customer is erased and provably absent from the next run."""

from __future__ import annotations

import json
import shutil
import stat
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

import fedcrm.cli.erasure_commands  # noqa: F401 - registers erase/erasures on the shared app
from conftest import tiny_store_data
from fedcrm.cli import app
from fedcrm.clients.preparation import PreparationRequest, prepare_store
from fedcrm.data.layout import StoreLayout
from fedcrm.data.store import load_store, write_store
from fedcrm.errors import ConfigError, DataError, PrivacyError
from fedcrm.privacy.boundary import release_for_purpose
from fedcrm.privacy.erasure import (
    ERASURE_REGISTER_NAME,
    PARTICIPATION_LOG_NAME,
    customer_ref,
    erased_refs,
    exclude_erased,
    list_requests,
    record_erasure,
    record_participation,
    remedy_commands,
    runs_including,
)
from fedcrm.privacy.keys import PSEUDONYM_KEY_NAME, StoreKeys, load_pseudonym_map
from fedcrm.privacy.pseudonyms import STORE_DOMAIN, keyed_pseudonyms
from fedcrm.synthetic.chain import ChainParams, generate_chain

CANARY = {
    "name": "CANARY金丝雀",
    "mobile": "13912345678",
    "email": "canary.xyz@example.com",
    "national_id": "110101199001011237",
    "address": "CANARY路1号",
}


def _pseudonym(layout: StoreLayout, customer_id: str) -> str:
    keys = StoreKeys.load_or_create(layout)
    return keyed_pseudonyms(keys.pseudonym_key, STORE_DOMAIN, [customer_id])[0]


@pytest.fixture(scope="module")
def chain_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A one-store chain of 120 customers; one consenting buyer carries canary contact data."""
    chain = tmp_path_factory.mktemp("template") / "chain"
    params = ChainParams(
        stores=1, customers_per_store=120, seed=3, start="2024-01-01", end="2025-01-01"
    )
    generate_chain(chain, params)
    root = next(p for p in chain.iterdir() if (p / "store.json").is_file())
    prepared = prepare_store(root, PreparationRequest())
    pmap = load_pseudonym_map(StoreLayout(root))
    canary_id = str(pmap.customer_id_of(pd.Series(prepared.features.customer_ids[:1])).iloc[0])
    store = load_store(root)
    customers = store.customers.copy()
    row = customers.index[customers["customer_id"] == canary_id][0]
    for column, value in CANARY.items():
        customers.loc[row, column] = value
    shutil.rmtree(root)  # a fresh store: no keys, no map, no logs
    write_store(replace(store, customers=customers), root, fmt="parquet")
    return root, canary_id


@pytest.fixture
def canary_store(chain_template: tuple[Path, str], tmp_path: Path) -> tuple[Path, str]:
    template, canary_id = chain_template
    chain = tmp_path / "chain"
    shutil.copytree(template.parent, chain)
    return chain / template.name, canary_id


def _rows_of(frame: pd.DataFrame, ids: set[str]) -> int:
    return int(frame["customer_id"].astype("str").isin(ids).sum())


def test_after_erasure_the_next_run_provably_excludes_the_canary(canary_store) -> None:
    root, canary = canary_store
    layout = StoreLayout(root)
    request = PreparationRequest()
    before = prepare_store(root, request)
    canary_pseudonym = _pseudonym(layout, canary)
    assert canary_pseudonym in set(before.features.customer_ids)
    record_participation(layout, "run-1", "churn", before.features.customer_ids)

    erasure = record_erasure(layout, canary, "written request received at the service desk")
    assert [r["run_id"] for r in erasure.affected_runs] == ["run-1"]

    # The boundary as prepare_store calls it, plus layout=: no row of the canary anywhere.
    store = load_store(root)
    assert _rows_of(store.customers, {canary}) == 1  # the raw store still holds them
    keys = StoreKeys.load_or_create(layout)
    as_of = pd.Timestamp.now()
    cutoff = before.features.cutoff
    release = release_for_purpose(
        store, "model_training", as_of, keys, reference_time=cutoff, layout=layout
    )
    assert release.erased_excluded == 1
    assert canary not in set(release.pseudonym_map.frame["customer_id"])
    released = release.data.tables()
    for name, frame in released.items():
        if "customer_id" in frame.columns:
            assert canary_pseudonym not in set(frame["customer_id"]), name
    text = "\n".join(f.to_csv() for f in released.values())
    assert not any(v in text for v in (canary, *CANARY.values()))
    # Consent counts describe only the customers left after the register.
    assert release.consent.total_customers == len(store.customers) - 1

    # Every table of the raw store loses the canary's rows (consents included).
    kept, count = exclude_erased(store, layout)
    assert count == 1
    assert all(_rows_of(f, {canary}) == 0 for f in kept.tables().values())
    assert all(
        len(kept.tables()[t]) == len(f) - _rows_of(f, {canary}) for t, f in store.tables().items()
    )
    # The same call without the layout (existing callers) is unchanged.
    plain = release_for_purpose(store, "model_training", as_of, keys, reference_time=cutoff)
    assert plain.erased_excluded == 0 and canary in set(plain.pseudonym_map.frame["customer_id"])

    # The register and the participation log identify nobody; both are private files.
    for name in (ERASURE_REGISTER_NAME, PARTICIPATION_LOG_NAME):
        path = layout.private_dir / name
        raw = path.read_bytes()
        for value in (canary, canary_pseudonym, *CANARY.values()):
            assert value.encode("utf-8") not in raw, (name, value)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(layout.private_dir.stat().st_mode) == 0o700
    assert erased_refs(layout) == {customer_ref(keys, canary)}
    # Nothing local re-identifies the canary's pseudonym any more.
    assert canary not in set(load_pseudonym_map(layout).frame["customer_id"])


def test_prepare_store_excludes_an_erased_customer(canary_store) -> None:
    root, canary = canary_store
    layout = StoreLayout(root)
    record_erasure(layout, canary)
    after = prepare_store(root, PreparationRequest())
    assert _pseudonym(layout, canary) not in set(after.features.customer_ids)


def test_participation_lists_affected_runs_and_the_last_clean_version(make_store) -> None:
    root = make_store()
    layout = StoreLayout(root)
    p1, p2, p3 = (_pseudonym(layout, c) for c in ("0001", "0002", "0003"))
    record_participation(layout, "run-a", "churn", [p2, p3])  # before the canary joined
    record_participation(layout, "run-b", "churn", [p1, p2, p3])
    record_participation(layout, "run-b", "preference", [p1])
    assert [r["run_id"] for r in runs_including(layout, "0002")] == ["run-a", "run-b"]
    found = runs_including(layout, "0001")
    assert [(r["run_id"], r["task"]) for r in found] == [
        ("run-b", "churn"),
        ("run-b", "preference"),
    ]

    erasure = record_erasure(layout, "0001")
    assert [(r["run_id"], r["task"]) for r in erasure.affected_runs] == [
        ("run-b", "churn"),
        ("run-b", "preference"),
    ]
    remedy = remedy_commands(erasure.affected_runs, store_dir=root)
    churn = next(line for line in remedy if line.startswith("churn:"))
    assert "run-a" in churn and "last model version trained without the customer" in churn
    assert "not implemented" in churn
    preference = next(line for line in remedy if line.startswith("preference:"))
    assert "no recorded run" in preference
    assert any(f"fedcrm train --data {root.parent} --out NEW_RUN_DIR" in line for line in remedy)
    config = root.parent / "run.toml"
    with_config = remedy_commands(erasure.affected_runs, store_dir=root, config=config)
    assert any(f"--config {config}" in line for line in with_config)
    assert "No recorded run" in remedy_commands([], store_dir=root)[0]


def test_linkage_pseudonyms_from_the_map_are_found(make_store) -> None:
    from fedcrm.privacy.keys import write_pseudonym_map

    root = make_store()
    layout = StoreLayout(root)
    linked = "f" * 32  # stands in for a linkage pseudonym (keyed on the mobile, not the id)
    frame = pd.DataFrame({"pseudonym": [linked], "customer_id": ["0002"], "basis": ["mobile"]})
    write_pseudonym_map(layout, frame)
    record_participation(layout, 7, "churn", [linked])
    assert runs_including(layout, "0002")[0]["run_id"] == "7"
    assert runs_including(layout, "0001") == []


def test_repeat_requests_are_recorded_and_listed(make_store) -> None:
    root = make_store()
    layout = StoreLayout(root)
    first = record_erasure(layout, "0002", "by e-mail")
    second = record_erasure(layout, "0002")
    assert not first.repeat and second.repeat and first.request_id != second.request_id
    assert first.customer_ref == second.customer_ref and len(first.customer_ref) == 64
    listed = list_requests(layout)
    assert [r.request_id for r in listed] == [first.request_id, second.request_id]
    assert listed[0].reason == "by e-mail" and listed[1].repeat
    lines = (layout.private_dir / ERASURE_REGISTER_NAME).read_text().splitlines()
    assert [json.loads(line)["repeat"] for line in lines] == [False, True]
    assert "0002" not in repr(first)


def test_unknown_customer_and_identifying_reasons_are_refused(make_store) -> None:
    root = make_store()
    layout = StoreLayout(root)
    with pytest.raises(DataError) as caught:
        record_erasure(layout, "SECRET-ID-9999")
    assert "SECRET-ID-9999" not in str(caught.value) and "no such customer" in str(caught.value)
    for reason in ("customer 0001 asked", "call 13800000001", "赵一 wrote", "x" * 201):
        with pytest.raises(ConfigError) as refused:
            record_erasure(layout, "0001", reason)
        assert "0001" not in str(refused.value) and "13800000001" not in str(refused.value)
    assert not (layout.private_dir / ERASURE_REGISTER_NAME).exists()  # nothing recorded


def test_an_unreadable_register_fails_closed(make_store) -> None:
    root = make_store()
    layout = StoreLayout(root)
    store = load_store(root)
    record_erasure(layout, "0001", store=store)
    path = layout.private_dir / ERASURE_REGISTER_NAME
    good = path.read_bytes()
    keys = StoreKeys.load_or_create(layout)
    for damaged in (good + b"{not json\n", good[:-10], b"[1, 2]\n"):
        path.write_bytes(damaged)
        with pytest.raises(PrivacyError):
            erased_refs(layout)
        with pytest.raises(PrivacyError):
            exclude_erased(store, layout)
        with pytest.raises(PrivacyError):
            release_for_purpose(store, "analytics", pd.Timestamp.now(), keys, layout=layout)
        with pytest.raises(PrivacyError):
            record_erasure(layout, "0002", store=store)
    path.write_bytes(good)
    assert exclude_erased(store, layout)[1] == 1
    # A register made under another key matches nobody: refused, not silently ignored.
    (layout.keys_dir / PSEUDONYM_KEY_NAME).write_bytes(b"\x01" * 32)
    with pytest.raises(PrivacyError, match=r"not the store's key"):
        exclude_erased(store, layout)
    (layout.keys_dir / PSEUDONYM_KEY_NAME).unlink()
    with pytest.raises(PrivacyError, match="missing"):
        exclude_erased(store, layout)


def test_cli_erase_lists_affected_runs_and_remedy(make_store) -> None:
    data = tiny_store_data()
    root = make_store(data=data)
    layout = StoreLayout(root)
    p1, p2 = _pseudonym(layout, "0001"), _pseudonym(layout, "0002")
    record_participation(layout, "run-a", "churn", [p2])
    record_participation(layout, "run-b", "churn", [p1, p2])
    runner = CliRunner()
    result = runner.invoke(
        app, ["erase", "--store", str(root), "--customer", "0001", "--reason", "letter"]
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert "run-b" in out and "fedcrm train --data" in out and "run-a" in out
    assert "erase-" in out
    row = data.customers.iloc[0]
    for value in ("0001", row["name"], row["mobile"], row["email"], p1):
        assert value not in out
    listed = runner.invoke(app, ["erasures", "--store", str(root)])
    assert listed.exit_code == 0, listed.output
    assert list_requests(layout)[0].request_id in listed.output and "0001" not in listed.output

    unknown = runner.invoke(app, ["erase", "--store", str(root), "--customer", "SECRET-77"])
    assert unknown.exit_code == 1 and "SECRET-77" not in unknown.output


@pytest.mark.slow
def test_a_federated_run_after_erasure_leaves_the_canary_out(tmp_path: Path) -> None:
    """End to end: a federated analytics run uses the canary's data; after `fedcrm erase`
    the next federated run does not (its participation record lacks the canary), and the
    erase command names the first run as affected."""
    from fedcrm.data.layout import discover_stores
    from fedcrm.federation import run_analytics_queries
    from fedcrm.privacy.erasure import runs_including

    chain = tmp_path / "chain"
    generate_chain(chain, ChainParams(stores=2, customers_per_store=150, seed=9))
    store = discover_stores(chain)[0]
    layout = StoreLayout(store)
    overrides = {"analytics-queries": "lifecycle_funnel", "analytics-epsilon": 0.5,
                 "audit-key-dir": str(tmp_path / "keys")}  # fmt: skip
    run_analytics_queries(tmp_path / "first", chain, overrides=overrides)
    used = [
        r["run_id"]
        for r in json.loads(
            "["
            + ",".join((layout.private_dir / "participation.jsonl").read_text().splitlines())
            + "]"
        )
    ]
    assert len(set(used)) == 1  # fmt: skip
    first_run = used[0]
    # a canary: a customer the first run used
    customers = load_store(store).customers["customer_id"].astype(str)
    canary = next(c for c in customers if runs_including(layout, c))
    result = CliRunner().invoke(app, ["erase", "--store", str(store), "--customer", canary])
    assert result.exit_code == 0, result.output
    assert first_run in result.output and canary not in result.output
    run_analytics_queries(tmp_path / "second", chain, overrides=overrides)
    runs = {r["run_id"] for r in runs_including(layout, canary)}
    assert runs == {first_run}  # the second run's data did not include the canary
    recorded = {
        json.loads(x)["run_id"]
        for x in (layout.private_dir / "participation.jsonl").read_text().splitlines()
    }
    assert len(recorded) == 2  # fmt: skip
