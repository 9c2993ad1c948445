"""The compliance report of a real federated run: JSON that follows docs/report.schema.json
with the ledgers' and logs' own numbers in all ten sections, an HTML page that is
self-contained and opens in headless Chromium without errors, no personal data in either,
the erasure register with its affected model versions, and a loud failure on a tampered log.

One small chain (3 stores x 150 customers) and one run (churn + preference, 2 rounds, one
analytics query) serve every test. Before the report is built, one customer who took part in
the run is erased (``fedcrm erase``) and one store's ledger refuses an oversized spend.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from browser import pixel_stddev, render, unavailable
from typer.testing import CliRunner

from fedcrm.audit.report import REPORT_FORMAT, SECTIONS, build_report
from fedcrm.cli import erasure_commands as _erasure_commands  # noqa: F401 - `fedcrm erase`
from fedcrm.cli import report_commands as _report_commands  # noqa: F401 - `fedcrm report`
from fedcrm.cli.app import app
from fedcrm.data.layout import StoreLayout, discover_stores
from fedcrm.errors import BudgetExceededError
from fedcrm.federation import run_federation
from fedcrm.privacy.erasure import list_requests, runs_including
from fedcrm.privacy.ledger import LedgerEntry, PrivacyBudget, PrivacyLedger
from fedcrm.synthetic.chain import ChainParams, generate_chain

pytestmark = pytest.mark.slow

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "docs" / "report.schema.json"
CONTROLLER = "Example Retail Co., Ltd. (controller)"
DPO = "Data Protection Officer <dpo@example.invalid>"
LIFETIME = 10.0
PII_COLUMNS = ("customer_id", "name", "mobile", "email", "national_id", "address")
_DATA_URI = re.compile(r"data:image/png;base64,[A-Za-z0-9+/=]+")


@dataclass
class Reported:
    chain: Path
    run: Path
    document: dict[str, Any]  # the JSON report as written by `fedcrm report --format json`
    html: str
    html_path: Path
    request_id: str
    erased_store: str
    refused_store: str


def _entries(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _store_log(store: Path) -> list[dict[str, Any]]:
    return _entries(StoreLayout(store).private_dir / "audit.jsonl")


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory) -> Reported:
    base = tmp_path_factory.mktemp("report")
    chain = base / "chain"
    generate_chain(chain, ChainParams(stores=3, customers_per_store=150, seed=21))
    run = base / "run"
    run_federation(
        run,
        chain,
        3,
        overrides={
            "num-rounds": 2,
            "epsilon": 3.0,
            "lifetime-epsilon": LIFETIME,
            "batch-size": 64,
            "server-optimizer": "fedavg",
            "analytics-queries": "lifecycle_funnel",
            "audit-key-dir": str(base / "coordinator-keys"),
            "baselines": False,
        },
    )
    stores = discover_stores(chain)

    # An erasure request for a customer whose data the run used (read BEFORE the report).
    erased = stores[0]
    layout = StoreLayout(erased)
    ids = pd.read_parquet(erased / "customers.parquet")["customer_id"].astype(str)
    customer = next(c for c in ids if runs_including(layout, c))
    result = _invoke("erase", "--store", str(erased), "--customer", customer)
    assert result.exit_code == 0, result.output
    request_id = list_requests(layout)[-1].request_id

    # A spend the store's ledger refuses (σ far too small for the analytics share).
    refused = StoreLayout(stores[2])
    ledger = PrivacyLedger.open(
        refused, PrivacyBudget(LIFETIME, PrivacyLedger.recorded_delta(refused))
    )
    with pytest.raises(BudgetExceededError):
        ledger.record(LedgerEntry("manual-check", 1, "analytics", 0.3, 1.0, 1))

    common = ["--stores", str(chain), "--controller", CONTROLLER, "--dpo", DPO]
    result = _invoke("report", str(run), *common)
    assert result.exit_code == 0, result.output
    assert "audit verification ok" in result.output
    assert str(run / "report.html") in result.output.replace("\n", "")
    result = _invoke("report", str(run), "--format", "json", *common)
    assert result.exit_code == 0, result.output
    html_path = run / "report.html"
    return Reported(
        chain=chain,
        run=run,
        document=json.loads((run / "report.json").read_text(encoding="utf-8")),
        html=html_path.read_text(encoding="utf-8"),
        html_path=html_path,
        request_id=request_id,
        erased_store=layout.store_id,
        refused_store=refused.store_id,
    )


# -- the JSON document -----------------------------------------------------------------------
def _undocumented(node: Any, where: str = "$") -> list[str]:
    """Paths of schema nodes that define a field without a description."""
    missing: list[str] = []
    if isinstance(node, dict):
        for name, sub in (node.get("properties") or {}).items():
            if "description" not in sub:
                missing.append(f"{where}.{name}")
            missing += _undocumented(sub, f"{where}.{name}")
        for name, sub in (node.get("$defs") or {}).items():
            if "description" not in sub:
                missing.append(f"{where}.$defs.{name}")
            missing += _undocumented(sub, f"{where}.$defs.{name}")
        for key in ("items", "additionalProperties"):
            sub = node.get(key)
            if isinstance(sub, dict):
                if "description" not in sub and "$ref" not in sub:
                    missing.append(f"{where}.{key}")
                missing += _undocumented(sub, f"{where}.{key}")
    return missing


def test_the_schema_documents_every_field() -> None:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["properties"]["format"]["const"] == REPORT_FORMAT
    assert set(schema["required"]) >= {key for key, _ in SECTIONS}
    assert _undocumented(schema) == []


def test_the_json_report_validates_against_the_schema(reported: Reported) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    errors = sorted(
        jsonschema.Draft202012Validator(schema).iter_errors(reported.document),
        key=lambda e: e.json_path,
    )
    assert not errors, [f"{e.json_path}: {e.message[:200]}" for e in errors[:10]]
    document = reported.document
    assert document["format"] == REPORT_FORMAT and document["version"] == 1
    assert all(key in document for key, _ in SECTIONS)


def test_sections_1_and_2_name_the_controller_run_stores_and_purposes(reported: Reported) -> None:
    document = reported.document
    coordinator = _entries(reported.run / "audit.jsonl")
    run_id = coordinator[0]["payload"]["run_id"]
    section = document["controller"]
    assert (section["controller"], section["dpo"]) == (CONTROLLER, DPO)
    assert section["federation_id"] == run_id == document["summary"]["run_id"]
    assert section["run"]["status"] == "completed"
    labels = [StoreLayout(s).store_id for s in discover_stores(reported.chain)]
    assert [s["label"] for s in section["stores"]] == sorted(labels)
    assert all(s["participated"] and s["log_available"] for s in section["stores"])
    times = [e["time"] for e in coordinator] + [
        e["time"] for s in discover_stores(reported.chain) for e in _store_log(s)
    ]
    assert section["report_period"] == {"first_event": min(times), "last_event": max(times)}

    records = {r["purpose"]: r for r in document["processing"]["records"]}
    assert set(records) == {"churn", "preference", "analytics"}
    assert all(r["performed_in_run"] for r in records.values())
    assert records["churn"]["consent_purposes"] == ["model_training"]
    assert records["analytics"]["consent_purposes"] == ["analytics"]
    assert "SecAgg+" in records["churn"]["recipients"]
    versions = {
        e["payload"]["task"]: e["payload"] for e in coordinator if e["kind"] == "model_version"
    }
    for task in ("churn", "preference"):
        assert records[task]["model_versions"][0]["files_sha256"] == versions[task]["files"]
    released = {f for c in records["churn"]["data_categories"] for f in c["fields"]}
    assert not any(f.startswith(("name ", "mobile ", "email ")) for f in released)


def test_consent_counts_are_the_consent_filter_events(reported: Reported) -> None:
    by_store = {s["store"]: s for s in reported.document["consent"]["stores"]}
    for store in discover_stores(reported.chain):
        latest: dict[tuple, dict] = {}
        for entry in _store_log(store):
            if entry["kind"] == "consent_filter":
                p = entry["payload"]
                latest[(p["run_id"], p["task"], p["purpose"])] = p
        filters = by_store[StoreLayout(store).store_id]["filters"]
        assert {(f["run_id"], f["task"], f["purpose"]) for f in filters} == set(latest)
        for f in filters:
            p = latest[(f["run_id"], f["task"], f["purpose"])]
            assert f["included"] == p["included"] and f["excluded"] == p["excluded"]
            assert f["total_customers"] == p["total_customers"]
            assert f["excluded_total"] == sum(p["excluded"].values())
            assert f["withdrawn"] == p["excluded"].get("revoked", 0)
            assert f["this_run"]


def test_deidentification_statement_is_honest(reported: Reported) -> None:
    section = reported.document["deidentification"]
    assert section["classification"] == "de-identified, not anonymised (PIPL Art. 73)"
    for store in section["stores"]:
        statement = store["statements"][0]
        assert statement["pseudonym_key_id"] and statement["policy_digest"]
        assert statement["action_counts"]["drop"] >= 5  # name, mobile, email, national id, …
        dropped = {c["column"] for c in statement["columns"] if c["action"] == "drop"}
        assert {"name", "mobile", "email", "national_id", "address"} <= dropped


def test_dp_ledger_is_the_stores_ledger(reported: Reported) -> None:
    by_store = {s["store"]: s for s in reported.document["dp_ledger"]["stores"]}
    for store in discover_stores(reported.chain):
        layout = StoreLayout(store)
        delta = PrivacyLedger.recorded_delta(layout)
        ledger = PrivacyLedger.open(layout, PrivacyBudget(LIFETIME, delta))
        section = by_store[layout.store_id]
        assert section["delta"] == delta
        assert section["lifetime"]["spent"] == pytest.approx(ledger.spent(), rel=1e-12)
        assert section["lifetime"]["cap"] == LIFETIME
        for purpose, share in (("churn", 0.5), ("preference", 0.3), ("analytics", 0.2)):
            row = section["purposes"][purpose]
            assert row["spent"] == pytest.approx(ledger.spent(purpose), rel=1e-12)
            assert row["spent"] > 0
            assert row["cap"] == pytest.approx(share * LIFETIME)
        assert len(section["entries"]) == len(ledger.entries)
        assert [e["noise_multiplier"] for e in section["entries"]] == [
            e.noise_multiplier for e in ledger.entries
        ]
        dp_rounds = [e for e in _store_log(store) if e["kind"] == "dp_round"]
        logged = [r for r in section["rounds"] if r["query"] is None]
        assert [r["lifetime_epsilon_spent"] for r in logged] == [
            e["payload"]["lifetime_epsilon_spent"] for e in dp_rounds
        ]
    refused = by_store[reported.refused_store]["refusals"]
    assert len(refused) == 1 and refused[0]["source"] == "privacy ledger"
    r = refused[0]
    assert r["requested"] > r["remaining"] and r["difference"] == pytest.approx(
        r["requested"] - r["remaining"]
    )
    measured = reported.document["impact_assessment"]["measured"]
    assert measured["max_lifetime_epsilon"] == max(
        s["lifetime"]["spent"] for s in by_store.values()
    )
    assert measured["refusals"] == 1


def test_analytics_release_log_is_the_coordinators(reported: Reported) -> None:
    logged = [e["payload"] for e in _entries(reported.run / "audit.jsonl")
              if e["kind"] == "analytics_release"]  # fmt: skip
    releases = reported.document["analytics"]["releases"]
    assert [r["query"] for r in releases] == [p["query"] for p in logged] == ["lifecycle_funnel"]
    release, payload = releases[0], logged[0]
    assert release["status"] == "released"
    for key in ("k", "threshold", "noise_std", "suppressed", "cells", "epsilon_per_store"):
        assert release[key] == payload[key]
    assert release["file_matches_log"] is True
    assert set(release["epsilon_by_store"]) == {
        StoreLayout(s).store_id for s in discover_stores(reported.chain)
    }
    measured = reported.document["impact_assessment"]["measured"]
    assert measured["largest_analytics_noise_std"] == payload["noise_std"]


def test_secure_aggregation_keys_and_integrity(reported: Reported) -> None:
    document = reported.document
    secagg = document["secure_aggregation"]
    assert secagg["enabled"] is True and "SecAgg+" in secagg["protocol"]
    assert "not used in simulation runs" in secagg["tls"]
    signing = {
        k["holder"]: k["key_id"] for k in secagg["key_inventory"] if k["algorithm"] == "Ed25519"
    }
    assert len(signing) == 4 and "coordinator" in signing

    integrity = document["audit_integrity"]
    assert integrity["ok"] and document["summary"]["verification_ok"]
    assert len(integrity["logs"]) == 4 and all(g["ok"] for g in integrity["logs"])
    coordinator = _entries(reported.run / "audit.jsonl")
    row = next(g for g in integrity["logs"] if g["writer"] == "coordinator")
    assert (row["head_seq"], row["head_hash"]) == (coordinator[-1]["seq"], coordinator[-1]["hash"])
    assert row["key_id"] == signing["coordinator"]
    assert integrity["store_heads_recorded"] == sum(e["kind"] == "store_head" for e in coordinator)


def test_the_erasure_request_and_its_model_versions_are_in_both_reports(
    reported: Reported,
) -> None:
    run_id = reported.document["summary"]["run_id"]
    stores = {s["store"]: s for s in reported.document["erasure"]["stores"]}
    (request,) = stores[reported.erased_store]["requests"]
    assert request["request_id"] == reported.request_id
    assert request["audit_logged"] and "excluded" in request["action"]
    tasks = {(v["run_id"], v["task"]) for v in request["affected_model_versions"]}
    assert (run_id, "churn") in tasks
    assert all(v["this_run"] for v in request["affected_model_versions"])
    assert reported.document["summary"]["erasure_requests"] == 1
    section = reported.html.split('id="s9"', 1)[1].split('id="s10"', 1)[0]
    assert reported.request_id in section and run_id in section and "churn" in section


def test_no_personal_data_in_either_report(reported: Reported) -> None:
    json_text = (reported.run / "report.json").read_text(encoding="utf-8")
    canaries = 0
    for store in discover_stores(reported.chain):
        customers = pd.read_parquet(store / "customers.parquet")
        for column in PII_COLUMNS:
            for value in customers[column].dropna().astype(str):
                if len(value) < 5:
                    continue
                canaries += 1
                assert value not in reported.html, f"a {column} value is in the HTML report"
                assert value not in json_text, f"a {column} value is in the JSON report"
    assert canaries > 1000


# -- the HTML page ---------------------------------------------------------------------------
def test_the_html_report_is_self_contained(reported: Reported) -> None:
    html = reported.html
    assert html.startswith("<!DOCTYPE html>")
    assert "<script" not in html.lower() and "javascript:" not in html.lower()
    assert html.count('src="data:image/png;base64,') == 2  # the two charts
    text = _DATA_URI.sub("DATA", html)
    assert not re.search(r"https?:|ftp:|//[a-z0-9]", text, re.IGNORECASE)
    assert "url(" not in text and "@import" not in text and "<link" not in text.lower()
    assert re.findall(r'src="([^"]*)"', text) == ["DATA", "DATA"]
    assert all(h.startswith("#") for h in re.findall(r'href="([^"]*)"', text))
    for number, (_, heading) in enumerate(SECTIONS, start=1):
        assert f"{number}. {heading}" in html
    assert CONTROLLER in html and "dpo@example.invalid" in html  # escaped <…> around it
    assert "<dpo@" not in html
    assert "Audit trail verified" in html


def test_the_html_report_renders_in_headless_chromium(reported: Reported, tmp_path: Path) -> None:
    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    result = render(reported.html_path, tmp_path / "report.png")
    assert result.errors == [], result.errors
    for number, (_, heading) in enumerate(SECTIONS, start=1):
        assert f"{number}. {heading}" in result.dom
    assert "Audit trail verified" in result.dom
    assert result.dom.count("data:image/png;base64,") == 2

    from PIL import Image

    with Image.open(result.png_path) as image:
        assert image.size == (1280, 2400)
    assert pixel_stddev(result.png_path) > 10  # not a blank page
    keep = os.environ.get("FEDCRM_REPORT_SCREENSHOT")
    if keep:
        shutil.copyfile(result.png_path, keep)


def test_the_browser_check_catches_console_errors(tmp_path: Path) -> None:
    """The check above would see a broken page: a script error is reported."""
    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    page = tmp_path / "broken.html"
    page.write_text(
        '<!DOCTYPE html><html><body><h1>x</h1><script>throw new Error("boom")</script>'
        "</body></html>",
        encoding="utf-8",
    )
    result = render(page, tmp_path / "broken.png")
    assert any("Uncaught" in line for line in result.errors), result.stderr[-2000:]


# -- failures --------------------------------------------------------------------------------
def test_a_tampered_store_log_fails_verification_and_the_command_exits_1(
    reported: Reported, tmp_path: Path
) -> None:
    chain, run = tmp_path / "chain", tmp_path / "run"
    shutil.copytree(reported.chain, chain)
    shutil.copytree(reported.run, run)
    store = discover_stores(chain)[1]
    log = StoreLayout(store).private_dir / "audit.jsonl"
    lines = log.read_text(encoding="utf-8").splitlines()
    index = next(i for i, line in enumerate(lines) if '"kind":"consent_filter"' in line)
    entry = json.loads(lines[index])
    entry["payload"]["included"] += 1  # a changed count, hash and signature left as they were
    lines[index] = json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")

    result = _invoke("report", str(run), "--stores", str(chain))
    assert result.exit_code == 1
    assert "audit verification FAILED" in result.output
    html = (run / "report.html").read_text(encoding="utf-8")
    assert "Audit verification FAILED" in html and "AUDIT VERIFICATION FAILED" in html
    assert "the entry was modified" in html

    result = _invoke("report", str(run), "--stores", str(chain), "--format", "json")
    assert result.exit_code == 1
    document = json.loads((run / "report.json").read_text(encoding="utf-8"))
    assert document["summary"]["verification_ok"] is False
    assert document["audit_integrity"]["ok"] is False
    bad = [g for g in document["audit_integrity"]["logs"] if not g["ok"]]
    assert len(bad) == 1 and bad[0]["log"].startswith("STORES/")
    assert "modified" in bad[0]["first_problem"]
    assert document["impact_assessment"]["residual_risk"].startswith("Cannot be assessed")


def test_without_the_chain_the_report_says_what_it_could_not_check(reported: Reported) -> None:
    document = build_report(reported.run)
    assert document["summary"]["verification_ok"] is False
    assert any("--stores" in note for note in document["notes"])
    assert document["consent"]["stores"] == [] and document["dp_ledger"]["stores"] == []
    assert any("not found" in f for f in document["audit_integrity"]["findings"])


def test_the_command_refuses_what_is_not_a_run(tmp_path: Path) -> None:
    result = _invoke("report", str(tmp_path))
    assert result.exit_code == 1
    assert "not a run directory" in result.output
    result = _invoke("report", str(tmp_path), "--format", "pdf")
    assert result.exit_code == 1 and "unknown --format" in result.output
