"""``fedcrm demo``: generate → train → score → summary, end to end on a small chain."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from fedcrm.cli import app
from fedcrm.data.layout import discover_stores
from fedcrm.data.store import load_store

runner = CliRunner()
SMALL = ["--stores", "3", "--customers-per-store", "250", "--rounds", "2", "--seed", "4"]


@pytest.mark.slow
def test_demo_generates_trains_scores_and_summarises(tmp_path: Path):
    data, run = tmp_path / "chain", tmp_path / "run"
    result = runner.invoke(app, ["demo", "--out", str(run), "--data", str(data), *SMALL])
    assert result.exit_code == 0, result.output

    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    assert summary["rounds"] == 2 and summary["wall_seconds"] > 0
    assert {"auc", "centralized_auc", "local_only_auc"} <= set(summary["churn"])
    assert len(summary["privacy"]["stores"]) == 3
    assert (run / "training.png").is_file()
    first = discover_stores(data)[0]
    scores = pd.read_csv(run / "scores" / f"{first.name}.csv", dtype={"customer_id": str})
    counts = json.loads((run / "scores" / f"{first.name}.json").read_text(encoding="utf-8"))
    assert counts["customers_scored"] == len(scores) > 0
    assert "centralized" in result.output and "local-only" in result.output
    # the demo verifies its audit trail and writes the compliance report of the run
    assert "signatures and the stores' pinned heads intact" in " ".join(result.output.split())
    report = json.loads((run / "report.json").read_text(encoding="utf-8"))
    assert report["summary"]["verification_ok"] is True
    assert (run / "report.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")

    customers = load_store(first).customers
    for value in [*customers["name"].dropna().head(30), *customers["mobile"].dropna().head(30)]:
        assert str(value) not in result.output
    for customer_id in scores["customer_id"].head(30):
        assert customer_id not in result.output

    again = runner.invoke(app, ["demo", "--out", str(run), "--data", str(data), *SMALL])
    assert again.exit_code == 1 and "finished run" in again.output  # nothing overwritten


@pytest.mark.parametrize(
    "manifest",
    # a store directory, as `fedcrm import` writes them; an imported chain that declares its
    # categories in chain.json (fedcrm.data.completejourney): only the synthetic generator's
    # manifest lets --fresh replace a chain
    [None, '{"source": "fedcrm.data.completejourney", "categories": ["a"]}'],
)
def test_fresh_never_replaces_data_fedcrm_did_not_generate(
    tmp_path: Path, make_store, manifest: str | None
):
    store = make_store("imported_store")
    if manifest is not None:
        (store.parent / "chain.json").write_text(manifest, encoding="utf-8")
    before = sorted(p.name for p in store.parent.iterdir())
    result = runner.invoke(
        app, ["demo", "--fresh", "--out", str(tmp_path / "run"), "--data", str(store.parent)]
    )
    assert result.exit_code == 1
    assert "not a generated synthetic chain" in result.output
    assert sorted(p.name for p in store.parent.iterdir()) == before


def test_fresh_never_replaces_an_output_that_is_not_a_run(tmp_path: Path):
    out = tmp_path / "notes"
    out.mkdir()
    (out / "mine.txt").write_text("keep me", encoding="utf-8")
    result = runner.invoke(
        app, ["demo", "--fresh", "--out", str(out), "--data", str(tmp_path / "chain")]
    )
    assert result.exit_code == 1 and "does not hold a fedcrm run" in result.output
    assert (out / "mine.txt").read_text(encoding="utf-8") == "keep me"
    assert not (tmp_path / "chain").exists()
