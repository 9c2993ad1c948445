"""The issue-3 baselines: centralized (non-private) and local-only (DP) references."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from fedcrm.data.layout import StoreLayout, discover_stores
from fedcrm.server.baselines import BASELINES_NOTE, baselines_for_config
from fedcrm.server.run_config import FederationConfig
from fedcrm.synthetic.chain import ChainParams, generate_chain


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("baselines") / "chain"
    generate_chain(out, ChainParams(stores=2, customers_per_store=300, seed=3))
    return out


def _ledger_files(chain: Path) -> list[Path]:
    from fedcrm.privacy.ledger import LEDGER_FILE_NAME, LOCK_FILE_NAME

    names = {LEDGER_FILE_NAME, LOCK_FILE_NAME}
    return [
        p
        for store in discover_stores(chain)
        for p in StoreLayout(store).root.rglob("*")
        if p.name in names
    ]


def test_baselines_give_finite_aucs_without_touching_ledgers(chain: Path) -> None:
    stores = discover_stores(chain)
    assert _ledger_files(chain) == []
    config = FederationConfig(data_dir=str(chain), num_rounds=5, batch_size=64)

    result = baselines_for_config(config, stores)

    for auc in (result.centralized_auc, result.local_only_auc):
        assert auc is not None and math.isfinite(auc) and 0 < auc < 1
    assert result.centralized_auc >= 0.6
    assert len(result.local_only_per_store) == len(stores)
    for store in result.local_only_per_store:
        assert store["epsilon"] == config.epsilon and store["noise_multiplier"] > 0
    assert result.num_eval == sum(s["num_eval"] for s in result.local_only_per_store)
    assert _ledger_files(chain) == []  # the privacy ledgers are neither created nor read

    summary = result.as_summary(0.75)
    assert summary["auc"] == 0.75 and summary["baselines_note"] == BASELINES_NOTE
    assert "simulation-only" in BASELINES_NOTE.lower()
