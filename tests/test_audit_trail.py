"""The audit trail of a real federated run: every store and the coordinator log what they did,
the coordinator pins the stores' log heads, verification passes on the run's outputs and
fails on tampering, and no entry holds personal data (the chain's own PII as canaries).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from fedcrm.audit.verify import verify_tree
from fedcrm.data.layout import StoreLayout, discover_stores
from fedcrm.federation import run_analytics_queries
from fedcrm.synthetic.chain import ChainParams, generate_chain

pytestmark = pytest.mark.slow

STORE_KINDS = {"run_start", "consent_filter", "deidentification", "analytics_release",
               "guard_decision"}  # fmt: skip


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A chain of 3 stores and one analytics run over it (its run directory)."""
    base = tmp_path_factory.mktemp("audit")
    chain = base / "chain"
    generate_chain(chain, ChainParams(stores=3, customers_per_store=200, seed=3))
    run = base / "run"
    run_analytics_queries(
        run,
        chain,
        overrides={"analytics-queries": "lifecycle_funnel,consent_coverage",
                   "audit-key-dir": str(base / "coordinator-keys")},
    )  # fmt: skip
    return chain, run


def _entries(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_every_party_logs_its_events_and_the_coordinator_pins_the_stores(
    audited: tuple[Path, Path],
) -> None:
    chain, run = audited
    coordinator = _entries(run / "audit.jsonl")
    kinds = [e["kind"] for e in coordinator]
    assert kinds[0] == "run_start" and kinds[-1] == "run_end" and "config" in kinds
    assert kinds.count("analytics_release") == 2
    pinned = {
        e["payload"]["writer"]: e["payload"] for e in coordinator if e["kind"] == "store_head"
    }
    for store in discover_stores(chain):
        entries = _entries(StoreLayout(store).private_dir / "audit.jsonl")
        assert {e["kind"] for e in entries} >= STORE_KINDS
        writer = entries[0]["writer"]
        assert writer in pinned  # the coordinator recorded this store's head
        head = pinned[writer]
        assert entries[head["seq"]]["hash"] == head["hash"]
    report = verify_tree(run, extra_dirs=[chain])
    assert report.ok, [f.describe() for f in report.findings]
    assert len(report.logs) == 4


def test_no_personal_data_in_any_audit_entry(audited: tuple[Path, Path]) -> None:
    chain, run = audited
    logs = [run / "audit.jsonl"] + [
        StoreLayout(s).private_dir / "audit.jsonl" for s in discover_stores(chain)
    ]
    text = "\n".join(p.read_text(encoding="utf-8") for p in logs)
    canaries = 0
    for store in discover_stores(chain):
        customers = pd.read_parquet(store / "customers.parquet")
        for column in ("customer_id", "name", "mobile", "email", "national_id", "address"):
            for value in customers[column].dropna().astype(str).head(40):
                canaries += 1
                assert value not in text, f"a {column} value appears in an audit log"
    assert canaries > 300


def test_verify_cli_passes_and_then_catches_a_rewritten_store_log(
    audited: tuple[Path, Path], tmp_path: Path
) -> None:
    from fedcrm.cli import app

    chain, run = audited
    copy_chain, copy_run = tmp_path / "chain", tmp_path / "run"
    shutil.copytree(chain, copy_chain)
    shutil.copytree(run, copy_run)
    ok = CliRunner().invoke(app, ["audit", "verify", str(copy_run), "--stores", str(copy_chain)])
    assert ok.exit_code == 0, ok.output
    # a store cuts its log back to before its analytics release: the coordinator's pin shows it
    store_log = StoreLayout(discover_stores(copy_chain)[1]).private_dir / "audit.jsonl"
    lines = store_log.read_text(encoding="utf-8").splitlines()
    release = next(i for i, line in enumerate(lines) if '"analytics_release"' in line)
    store_log.write_text("\n".join(lines[:release]) + "\n", encoding="utf-8")
    bad = CliRunner().invoke(app, ["audit", "verify", str(copy_run), "--stores", str(copy_chain)])
    assert bad.exit_code == 1
    assert "truncation" in bad.output
