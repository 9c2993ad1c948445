"""A retailer's own export, end to end with no code changes: import → train → score.

The source is what a real export looks like: a transactions file with the retailer's own column
names, no categories, no PII, and a consent ledger file (every customer granted analytics and
model training; marketing for some, revoked for some). It goes through the CLI only.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fedcrm.cli import app
from fedcrm.data.layout import discover_stores
from fedcrm.data.store import load_store
from fedcrm.synthetic.chain import ChainParams, generate_chain

pytestmark = pytest.mark.slow

runner = CliRunner()
TRAINING_PURPOSES = ("analytics", "model_training")
MAPPING = "customer_id=Member No,timestamp=Paid At,amount=Paid (CNY),store=Shop"


def _events(customers: pd.Series, purpose: str, granted: str, when: object) -> pd.DataFrame:
    return pd.DataFrame(
        {"customer_id": customers, "purpose": purpose, "granted": granted, "timestamp": when}
    )


def _export(chain: Path, tmp: Path) -> tuple[Path, Path, set[str]]:
    """Write the chain's purchases as a retailer export (CSV) and a consent ledger file.

    Returns the two files and the customers granted marketing (then never revoked).
    """
    rows, consents = [], []
    rng = np.random.default_rng(3)
    marketing: set[str] = set()
    for i, store_dir in enumerate(discover_stores(chain)):
        data = load_store(store_dir)
        tx = data.transactions
        ids = f"M{i}-" + tx["customer_id"].astype(str)
        rows.append(
            pd.DataFrame(
                {
                    "Member No": ids,
                    "Paid At": tx["timestamp"].dt.strftime("%Y/%m/%d %H:%M"),
                    "Paid (CNY)": tx["amount"].map(lambda v: f"¥{v:,.2f}"),
                    "Shop": store_dir.name.upper(),
                }
            )
        )
        customers = ids.drop_duplicates()
        first = tx.groupby(ids)["timestamp"].min().reindex(customers).dt.strftime("%Y-%m-%d")
        consents += [_events(customers, p, "yes", first.to_numpy()) for p in TRAINING_PURPOSES]
        granted = customers[rng.random(len(customers)) < 0.6]
        revoked = granted[: len(granted) // 4]
        consents.append(_events(granted, "marketing", "yes", first.reindex(granted).to_numpy()))
        consents.append(_events(revoked, "marketing", "no", "2025-12-20"))
        marketing |= set(granted) - set(revoked)
    source, ledger = tmp / "sales_export.csv", tmp / "consent_ledger.csv"
    pd.concat(rows).to_csv(source, index=False)
    pd.concat(consents).to_csv(ledger, index=False)
    return source, ledger, marketing


def test_import_then_train_then_score_without_code_changes(tmp_path: Path):
    chain = tmp_path / "synthetic"
    generate_chain(chain, ChainParams(stores=3, customers_per_store=300, seed=21))
    source, ledger, marketing = _export(chain, tmp_path)
    imported, run, scores = tmp_path / "imported", tmp_path / "run", tmp_path / "scores.csv"

    result = runner.invoke(
        app,
        ["import", str(source), "--map", MAPPING, "--store-column", "Shop",
         "--consent", str(ledger), "--out", str(imported)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    stores = discover_stores(imported)
    assert len(stores) == 3
    store = load_store(stores[0])
    assert "category" not in store.transactions or store.transactions["category"].isna().all()

    result = runner.invoke(
        app,
        ["train", "--data", str(imported), "--out", str(run), "--rounds", "2",
         "--epsilon", "3"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    assert summary["rounds"] == 2
    for store_privacy in summary["privacy"]["stores"].values():
        assert 0 < store_privacy["epsilon"] <= store_privacy["budget"]
    card = json.loads((run / "model" / "model_card.json").read_text(encoding="utf-8"))
    assert card["federation"]["secure_aggregation"] is True

    result = runner.invoke(
        app, ["score", "--run", str(run), "--store", str(stores[0]), "--out", str(scores)]
    )
    assert result.exit_code == 0, result.output
    scored = pd.read_csv(scores, dtype={"customer_id": str})
    own_ids = set(store.customers["customer_id"].astype(str))
    assert len(scored) > 0 and set(scored["customer_id"]) <= own_ids
    assert scored["churn_probability"].between(0, 1).all()
    gated = ~scored["customer_id"].isin(marketing)
    assert gated.any() and (~gated).any()
    assert (scored.loc[gated, "action"] == "no_marketing_consent").all()
    assert (scored.loc[~gated, "action"] != "no_marketing_consent").all()
    for customer_id in scored["customer_id"].head(50):
        assert customer_id not in result.output  # ids stay in the file, not on the screen
