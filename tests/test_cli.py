"""The command line: one-line errors, exit codes, validate output."""

from __future__ import annotations

import json

import pandas as pd
from typer.testing import CliRunner

from fedcrm.cli import app

runner = CliRunner()


def test_validate_clean_store_exits_zero(make_store):
    result = runner.invoke(app, ["validate", str(make_store())])
    assert result.exit_code == 0, result.output
    assert "valid: 1 store(s)" in result.output


def test_validate_reports_defects_and_exits_one(make_store):
    root = make_store()
    frame = pd.read_csv(root / "transactions.csv", dtype=str)
    frame.loc[2, "amount"] = "-1"
    frame.to_csv(root / "transactions.csv", index=False)
    result = runner.invoke(app, ["validate", str(root), "--json"])
    assert result.exit_code == 1
    payload = json.loads(result.stdout)
    (store,) = payload
    assert store["ok"] is False
    assert {"file": "transactions.csv", "row": 3, "field": "amount"}.items() <= store["findings"][
        0
    ].items()


def test_validate_chain_of_stores_checks_each(make_store, tmp_path):
    make_store("a")
    make_store("b")
    result = runner.invoke(app, ["validate", str(tmp_path), "--json"])
    assert result.exit_code == 0
    assert sorted(s["store_id"] for s in json.loads(result.stdout)) == ["s1", "s1"]


def test_user_error_is_one_line_without_traceback(tmp_path):
    result = runner.invoke(app, ["validate", str(tmp_path / "nowhere")])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "no such directory" in lines[0]
    assert "Traceback" not in result.output


def test_file_system_errors_are_one_line(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    result = runner.invoke(app, ["generate", "--out", str(blocker / "chain"), "--stores", "1"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output and result.output.startswith("error:")


def test_force_never_replaces_a_directory_fedcrm_did_not_write(tmp_path):
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "precious.txt").write_text("do not delete")
    result = runner.invoke(
        app,
        ["generate", "--out", str(keep), "--stores", "1", "--customers-per-store", "20", "--force"],
    )
    assert result.exit_code == 1 and "not written by fedcrm" in result.output
    assert (keep / "precious.txt").read_text() == "do not delete"


def test_generate_refuses_an_end_in_the_future(tmp_path):
    result = runner.invoke(app, ["generate", "--out", str(tmp_path / "c"), "--end", "2030-01-01"])
    assert result.exit_code == 1 and "in the future" in result.output


def test_round_progress_shows_live_round_metrics_and_phases():
    import io

    from rich.console import Console

    from fedcrm.cli.console import round_progress, round_text

    assert round_text({"round": 1}) == "AUC –"  # e.g. every store lacked one class
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=120)
    with round_progress(2, "federated rounds", console=console) as progress:
        progress(1, 2, {"round": 1})
        progress(2, 2, {"round": 2, "evaluate": {"auc": 0.8712}, "loss": 0.4121})
        progress.phase("baselines: centralized and local-only")
    text = buffer.getvalue()
    assert "AUC 0.871 · loss 0.412" in text and "2/2" in text
    assert "baselines: centralized and local-only" in text
