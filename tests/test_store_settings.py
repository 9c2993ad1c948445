"""A store's own policy: where its data is and how its lifetime ε is split between purposes."""

from __future__ import annotations

from pathlib import Path

import pytest
from flwr.app import Context, RecordDict

from fedcrm.clients.store_agent import store_settings
from fedcrm.errors import ConfigError


def _context(node: dict, run: dict) -> Context:
    return Context(run_id=1, node_id=2, node_config=node, state=RecordDict(), run_config=run)


def test_budget_shares_come_from_the_node_then_the_run_then_the_defaults(tmp_path: Path):
    node = {"data-path": str(tmp_path), "budget-share-preference": 0.1}
    run = {"budget-share-preference": 0.4, "budget-share-churn": 0.6}
    split = store_settings(_context(node, run)).split
    assert (split.churn, split.preference, split.analytics) == (0.6, 0.1, 0.2)


def test_shares_that_overspend_the_lifetime_budget_are_refused(tmp_path: Path):
    node = {"data-path": str(tmp_path), "budget-share-churn": 0.9}
    with pytest.raises(ConfigError, match="sum to at most 1"):
        store_settings(_context(node, {}))
